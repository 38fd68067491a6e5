//! HTTP/1.x wire format: head parsing straight from the receive buffer and body framing.

pub mod body;
pub mod parse;
