//! De-chunking an HTTP/1 chunked body for HTTP/2: which buffered bytes go out as DATA and, at
//! the end, the trailer fields to send as HTTP/2 trailers. Pure, so both directions share it
//! (a target's response toward the h2 client in `stream`, a client's upload toward an h2
//! target in `upstream`) and each keeps its own reads, sends, limits and errors.

use std::ops::Range;

use http::HeaderMap;

use super::head;
use crate::http1::body::{BodyError, ChunkedDecoder};

/// What the buffered bytes yield next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Payload to send as DATA: this range of the buffer.
    Data(Range<usize>),
    /// The body is over; its trailer fields (empty when it had none or HTTP/2 forbids them all).
    End(HeaderMap),
    /// Nothing more until more bytes arrive: keep `buf[pos..]` (an incomplete line) and read.
    More,
}

/// A chunked body being turned into DATA ranges and trailers.
#[derive(Debug, Default)]
pub(crate) struct Dechunk {
    dec: ChunkedDecoder,
    /// Framing consumed since the last payload byte: at the end, the trailer section.
    tail: Vec<u8>,
}

impl Dechunk {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Decodes `buf` from `*pos`, moving `*pos` past what it used. Call again after each `Data`;
    /// after `More`, drop `buf[..*pos]`, append what arrives and call with `*pos = 0`.
    pub(crate) fn next(&mut self, buf: &[u8], pos: &mut usize) -> Result<Next, BodyError> {
        // A step may end the body in the same call that yields its last data.
        if self.dec.is_done() {
            return Ok(Next::End(head::trailers(&self.tail)));
        }
        while *pos < buf.len() {
            let at = *pos;
            let step = self.dec.step(&buf[at..])?;
            let consumed = &buf[at..at + step.consumed];
            *pos += step.consumed;
            match step.data {
                Some(r) => {
                    self.tail.clear();
                    self.tail.extend_from_slice(&consumed[r.end..]);
                    return Ok(Next::Data(at + r.start..at + r.end));
                }
                None => self.tail.extend_from_slice(consumed),
            }
            if step.done {
                return Ok(Next::End(head::trailers(&self.tail)));
            }
            if step.consumed == 0 {
                break;
            }
        }
        Ok(Next::More)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload, the trailers as `name: value` lines, and the bytes left after the body.
    type Decoded = (Vec<u8>, Vec<String>, Vec<u8>);

    /// What a caller ends with after feeding `pieces` one after another, as the callers do.
    fn run(pieces: &[&[u8]]) -> Result<Decoded, BodyError> {
        let mut d = Dechunk::new();
        let mut buf = Vec::new();
        let mut payload = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            buf.extend_from_slice(piece);
            let mut p = 0;
            loop {
                match d.next(&buf, &mut p)? {
                    Next::Data(r) => {
                        assert!(!r.is_empty(), "an empty data range");
                        payload.extend_from_slice(&buf[r]);
                    }
                    Next::End(t) => {
                        buf.drain(..p);
                        // What had not arrived yet follows the body too.
                        buf.extend(pieces[i + 1..].concat());
                        let fields = t
                            .iter()
                            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
                            .collect();
                        return Ok((payload, fields, buf));
                    }
                    Next::More => break,
                }
            }
            buf.drain(..p);
        }
        panic!("body not over; payload so far {payload:?}, kept {buf:?}");
    }

    /// `body` fed whole, split once at every point, and byte by byte: all the same.
    fn every_split(body: &[u8]) -> Result<Decoded, BodyError> {
        let whole = run(&[body]);
        for at in 0..=body.len() {
            let (a, b) = body.split_at(at);
            assert_eq!(run(&[a, b]), whole, "split at {at} of {body:?}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(run(&bytes), whole, "byte by byte: {body:?}");
        whole
    }

    #[test]
    fn chunked_bodies_yield_their_payload_and_trailers_wherever_they_are_split() {
        type Case = (
            &'static [u8],
            &'static [u8],
            &'static [&'static str],
            &'static [u8],
        );
        // (body, payload, trailers, bytes left after the body)
        let cases: &[Case] = &[
            (b"0\r\n\r\n", b"", &[], b""),
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello", &[], b""),
            (b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n", b"abcdefg", &[], b""),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", &[], b""),
            (b"3;name=val\r\nabc\r\n0;last\r\n\r\n", b"abc", &[], b""),
            (
                b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n",
                b"abc",
                &["grpc-status: 0", "grpc-message: ok"],
                b"",
            ),
            (b"0\r\nx-sum:  7 \r\n\r\n", b"", &["x-sum: 7"], b""),
            // Fields HTTP/2 forbids in trailers are dropped.
            (
                b"1\r\nz\r\n0\r\ncontent-length: 1\r\nx-a: b\r\n\r\n",
                b"z",
                &["x-a: b"],
                b"",
            ),
            // What follows the body stays in the buffer.
            (
                b"2\r\nok\r\n0\r\n\r\nGET / HTTP/1.1",
                b"ok",
                &[],
                b"GET / HTTP/1.1",
            ),
        ];
        for &(body, payload, trailers, rest) in cases {
            let (p, t, r) = every_split(body).unwrap_or_else(|e| panic!("{body:?}: {e:?}"));
            assert_eq!(p, payload, "payload of {body:?}");
            assert_eq!(t, trailers, "trailers of {body:?}");
            assert_eq!(r, rest, "bytes after {body:?}");
        }
    }

    #[test]
    fn bad_chunks_are_refused_wherever_they_are_split() {
        let cases: &[&[u8]] = &[
            b"zz\r\nab\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"3\r\nabc\r\n0\r\nno colon\r\n\r\n",
        ];
        for &body in cases {
            assert!(run(&[body]).is_err(), "whole {body:?}");
            for at in 0..body.len() {
                let (a, b) = body.split_at(at);
                assert!(run(&[a, b]).is_err(), "split at {at} of {body:?}");
            }
        }
    }

    #[test]
    fn data_that_ends_the_body_in_the_same_step_comes_before_the_end() {
        let mut d = Dechunk::new();
        let buf = b"3\r\nabc\r\n0\r\nx: y\r\n\r\n";
        let mut p = 0;
        assert_eq!(d.next(buf, &mut p), Ok(Next::Data(3..6)));
        let Ok(Next::End(t)) = d.next(buf, &mut p) else {
            panic!("no end after the last data");
        };
        assert_eq!(p, buf.len());
        assert_eq!(t.get("x").unwrap(), "y");
    }
}
