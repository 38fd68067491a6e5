//! HTTP/1.x wire format: head parsing straight from the receive buffer, body framing, and the
//! request head forwarded upstream.

pub mod body;
pub mod forward;
pub mod parse;
pub mod response;
