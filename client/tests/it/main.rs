mod properties;
mod submit;
