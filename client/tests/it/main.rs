//! The client as a linking service uses it: this test program links only
//! `mdc-client` and talks to MDC over real connections.

mod batch;
mod footprint;
mod http;
mod properties;
mod transports;
