//! End-to-end tests: each spawns the real `mdc` binary on a free loopback
//! port with its own data directory and talks to it over HTTP.

mod accept;
mod api;
mod auth;
mod backends;
mod batch;
mod crash;
mod devices;
mod harness;
mod kafka;
mod lifecycle;
mod operations;
mod outcomes;
mod receiver;
mod routing;
mod ses;
mod sns_sms;
mod status_api;
mod suppression;
mod webhooks;
