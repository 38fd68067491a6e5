//! The FastCGI transport (`transport.protocol: fastcgi`, e.g. php-fpm): requests become
//! FastCGI records and CGI/1.1 parameters, responses come back as CGI output and go to the
//! client as HTTP/1.1. Targets, balancing, health, retries and pooling are the HTTP path's
//! (`proxy::forward` and the shared connector); only the exchange on the connection differs.
//!
//! The record layer is written here rather than taken from a crate: the Rust FastCGI crates
//! are servers, or clients tied to tokio's I/O traits that buffer whole parameter sets and
//! bodies, while ringway streams through monoio's owned buffers. Records are an 8-byte
//! header and length-prefixed pairs, so the layer is small, pure and table-tested.

pub mod exchange;
pub mod params;
pub mod record;
