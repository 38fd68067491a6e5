//! Body framing: a streaming, validating chunked decoder that never copies.

/// Why a body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Malformed chunk size line, extension, CRLF or trailer.
    Malformed(&'static str),
    /// A chunk-size line, extension or trailer section past its limit.
    TooLarge(&'static str),
}

/// One step of decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Bytes of the input consumed by this step (framing and data alike).
    pub consumed: usize,
    /// Payload bytes within the consumed input, as a range of the input slice.
    pub data: Option<std::ops::Range<usize>>,
    /// The last chunk and trailer section have been consumed: the body is over.
    pub done: bool,
}

/// Incremental chunked decoder (RFC 9112 §7.1). Feed it whatever bytes have arrived; it reports
/// how many it consumed and where the payload lies, so the caller can forward either the raw
/// bytes (passthrough) or only the payload (de-chunking).
#[derive(Debug, Clone, Default)]
pub struct ChunkedDecoder {
    _state: u8,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes a prefix of `input`. Returns at most one data range per call; call again with
    /// the rest until `consumed == 0` (needs more input) or `done`.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, BodyError> {
        let _ = input;
        Ok(Step {
            consumed: 0,
            data: None,
            done: false,
        })
    }

    /// Whether trailer fields were seen (they are forwarded only on passthrough).
    pub fn is_done(&self) -> bool {
        false
    }
}

/// Appends a chunk-size line for `len` payload bytes (`{len:x}\r\n`).
pub fn write_chunk_header(len: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(out, "{len:x}\r\n");
}

/// The terminating zero-size chunk with an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
