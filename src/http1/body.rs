//! Body framing: a streaming, validating chunked decoder that never copies.

/// Longest chunk-size line (size, extensions, CRLF): real senders use a few bytes, so anything
/// near this is abuse, and it bounds the re-scan of a line that arrives in pieces.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Longest trailer section (all trailer lines and the final CRLF): trailers are rare and small.
pub const MAX_TRAILER_SECTION: usize = 16 * 1024;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside chunk data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF that ends chunk data.
    DataEnd,
    /// Expecting a trailer line or the final empty line.
    Trailer,
    Done,
    /// A previous step failed; the stream cannot be resynchronised.
    Failed(BodyError),
}

/// Incremental chunked decoder (RFC 9112 §7.1). Feed it whatever bytes have arrived; it reports
/// how many it consumed and where the payload lies, so the caller can forward either the raw
/// bytes (passthrough) or only the payload (de-chunking).
#[derive(Debug, Clone, Default)]
pub struct ChunkedDecoder {
    state: State,
    trailer_bytes: usize,
    trailers: bool,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes a prefix of `input`. Returns at most one data range per call; call again with
    /// the rest until `consumed == 0` (needs more input) or `done`.
    ///
    /// Framing lines are consumed only when complete, so the caller keeps unconsumed bytes and
    /// calls again with more appended. Bytes after the body are never consumed.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, BodyError> {
        let mut pos = 0;
        let mut data = None;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Size => match size_line(rest) {
                    Ok(Some((len, 0))) => {
                        pos += len;
                        self.state = State::Trailer;
                    }
                    Ok(Some((len, size))) => {
                        pos += len;
                        self.state = State::Data(size);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(self.fail(e)),
                },
                State::Data(left) => {
                    if data.is_some() || rest.is_empty() {
                        break;
                    }
                    let n = left.min(rest.len() as u64);
                    data = Some(pos..pos + n as usize);
                    pos += n as usize;
                    self.state = if n == left {
                        State::DataEnd
                    } else {
                        State::Data(left - n)
                    };
                }
                State::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = State::Size;
                    }
                    [] | [b'\r'] => break,
                    _ => return Err(self.fail(malformed("missing CRLF after chunk data"))),
                },
                State::Trailer => {
                    match trailer_line(rest, MAX_TRAILER_SECTION - self.trailer_bytes) {
                        Ok(Some((len, last))) => {
                            pos += len;
                            self.trailer_bytes += len;
                            if last {
                                self.state = State::Done;
                            } else {
                                self.trailers = true;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return Err(self.fail(e)),
                    }
                }
                State::Done => {
                    return Ok(Step {
                        consumed: pos,
                        data,
                        done: true,
                    })
                }
                State::Failed(e) => return Err(e),
            }
        }
        Ok(Step {
            consumed: pos,
            data,
            done: false,
        })
    }

    /// Whether the last chunk and the trailer section have been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether trailer fields were seen (they survive only passthrough, not de-chunking).
    pub fn has_trailers(&self) -> bool {
        self.trailers
    }

    fn fail(&mut self, e: BodyError) -> BodyError {
        self.state = State::Failed(e);
        e
    }
}

fn malformed(why: &'static str) -> BodyError {
    BodyError::Malformed(why)
}

/// Where the chunk-extension grammar stands after the bytes seen so far.
#[derive(Clone, Copy)]
enum Ext {
    /// Just after the size, a name or a value: `;`, `=` (after a name), BWS or CR may follow.
    AfterItem {
        name: bool,
    },
    /// BWS after an item: only `;` or `=` (after a name) may end it.
    Bws {
        name: bool,
    },
    BeforeName,
    Name,
    BeforeValue,
    TokenValue,
    Quoted,
    QuotedPair,
    /// CR seen; LF must follow.
    Cr,
}

/// Parses `chunk-size [ chunk-ext ] CRLF` at the start of `input`: `Some((line length, size))`,
/// or `None` while the line is incomplete but still valid.
fn size_line(input: &[u8]) -> Result<Option<(usize, u64)>, BodyError> {
    let scan = &input[..input.len().min(MAX_CHUNK_LINE)];
    let incomplete = || {
        if input.len() >= MAX_CHUNK_LINE {
            Err(BodyError::TooLarge("chunk-size line"))
        } else {
            Ok(None)
        }
    };
    // The value is limited, not the digit count: leading zeros are valid (RFC 9112 §7.1) and
    // MAX_CHUNK_LINE bounds how many there can be.
    let mut size = 0u64;
    let mut i = 0;
    while let Some(d) = scan.get(i).and_then(|&b| (b as char).to_digit(16)) {
        if size >> 60 != 0 {
            return Err(malformed("chunk size overflows 64 bits"));
        }
        size = size << 4 | u64::from(d);
        i += 1;
    }
    if i == scan.len() {
        return incomplete();
    }
    if i == 0 {
        return Err(malformed("chunk size is not hexadecimal"));
    }
    let mut st = Ext::AfterItem { name: false };
    for (j, &b) in scan.iter().enumerate().skip(i) {
        st = match (st, b) {
            (Ext::Cr, b'\n') => return Ok(Some((j + 1, size))),
            (Ext::Cr, _) => return Err(malformed("bare CR in chunk-size line")),
            (_, b'\n') => return Err(malformed("bare LF in chunk-size line")),
            (Ext::AfterItem { .. }, b'\r') => Ext::Cr,
            (Ext::AfterItem { name } | Ext::Bws { name }, b' ' | b'\t') => Ext::Bws { name },
            (Ext::AfterItem { .. } | Ext::Bws { .. }, b';') => Ext::BeforeName,
            (Ext::AfterItem { name: true } | Ext::Bws { name: true }, b'=') => Ext::BeforeValue,
            (Ext::BeforeName, b' ' | b'\t') => Ext::BeforeName,
            (Ext::BeforeName | Ext::Name, b) if is_tchar(b) => Ext::Name,
            (Ext::Name, b'\r') => Ext::Cr,
            (Ext::Name, b' ' | b'\t') => Ext::Bws { name: true },
            (Ext::Name, b';') => Ext::BeforeName,
            (Ext::Name, b'=') => Ext::BeforeValue,
            (Ext::BeforeValue, b' ' | b'\t') => Ext::BeforeValue,
            (Ext::BeforeValue, b'"') => Ext::Quoted,
            (Ext::BeforeValue | Ext::TokenValue, b) if is_tchar(b) => Ext::TokenValue,
            (Ext::TokenValue, b'\r') => Ext::Cr,
            (Ext::TokenValue, b' ' | b'\t') => Ext::Bws { name: false },
            (Ext::TokenValue, b';') => Ext::BeforeName,
            (Ext::Quoted, b'"') => Ext::AfterItem { name: false },
            (Ext::Quoted, b'\\') => Ext::QuotedPair,
            (Ext::Quoted, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff) => {
                Ext::Quoted
            }
            (Ext::QuotedPair, b'\t' | b' '..=0x7e | 0x80..=0xff) => Ext::Quoted,
            (_, b'\r') => return Err(malformed("bare CR in chunk-size line")),
            _ => return Err(malformed("invalid chunk extension")),
        };
    }
    incomplete()
}

/// Parses one trailer line at the start of `input` within `budget` bytes: `Some((length,
/// is the final empty line))`, or `None` while incomplete but still valid.
fn trailer_line(input: &[u8], budget: usize) -> Result<Option<(usize, bool)>, BodyError> {
    let scan = &input[..input.len().min(budget)];
    let incomplete = || {
        if !input.is_empty() && input.len() >= budget {
            Err(BodyError::TooLarge("trailer section"))
        } else {
            Ok(None)
        }
    };
    match scan {
        [b'\r', b'\n', ..] => return Ok(Some((2, true))),
        [b'\r', _, ..] => return Err(malformed("bare CR in trailer section")),
        [b'\n', ..] => return Err(malformed("bare LF in trailer section")),
        [] | [b'\r'] => return incomplete(),
        _ => {}
    }
    let name = scan.iter().take_while(|&&b| is_tchar(b)).count();
    match scan.get(name) {
        None => return incomplete(),
        // A leading SP/HTAB (obs-fold) or a space before the colon lands here too.
        Some(&b) if name == 0 || b != b':' => {
            return Err(malformed("invalid trailer field name"));
        }
        Some(_) => {}
    }
    for (j, &b) in scan.iter().enumerate().skip(name + 1) {
        match b {
            b'\t' | b' '..=0x7e | 0x80..=0xff => {}
            b'\r' => {
                return match scan.get(j + 1) {
                    Some(b'\n') => Ok(Some((j + 2, false))),
                    Some(_) => Err(malformed("bare CR in trailer section")),
                    None => incomplete(),
                }
            }
            b'\n' => return Err(malformed("bare LF in trailer section")),
            _ => return Err(malformed("invalid trailer field value")),
        }
    }
    incomplete()
}

/// RFC 9110 tchar.
fn is_tchar(b: u8) -> bool {
    static TCHAR: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            t[b] = (b as u8).is_ascii_alphanumeric()
                || matches!(
                    b as u8,
                    b'!' | b'#'
                        ..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
                );
            b += 1;
        }
        t
    };
    TCHAR[b as usize]
}

/// Appends a chunk-size line for `len` payload bytes (`{len:x}\r\n`).
pub fn write_chunk_header(len: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(out, "{len:x}\r\n");
}

/// The terminating zero-size chunk with an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How a body is written out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Encode {
    /// Bytes as they came (Content-Length, or chunked passthrough).
    Raw,
    /// Wrap each read in a chunk (close-delimited upstream body to an HTTP/1.1 client).
    Chunk,
    /// Strip chunk framing (chunked upstream body to an HTTP/1.0 client).
    Dechunk,
    /// Read and drop (a HEAD client whose upstream request was not HEAD).
    Discard,
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"5;name=value;flag\r\nhello\r\n\
        1A ; q=\"a \\\"quoted\\\" ;x\"\r\nabcdefghijklmnopqrstuvwxyz\r\n\
        000a\r\n0123456789\r\n\
        0;last\r\nX-Checksum: abc\r\nX-Empty:\r\nX-Obs: \xe2\x82\xac\t\r\n\r\n";
    const PAYLOAD: &[u8] = b"helloabcdefghijklmnopqrstuvwxyz0123456789";
    const NEXT: &[u8] = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n";

    /// What a caller saw: payload, total bytes consumed, and whether the body ended.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        payload: Vec<u8>,
        consumed: usize,
        done: bool,
    }

    /// Feeds `input` in the given piece sizes the way the proxy does: unconsumed bytes are kept
    /// and more are appended before the next call.
    fn feed(input: &[u8], pieces: impl IntoIterator<Item = usize>) -> Result<Outcome, BodyError> {
        let mut dec = ChunkedDecoder::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut out = Outcome {
            payload: Vec::new(),
            consumed: 0,
            done: false,
        };
        let mut at = 0;
        let mut sizes = pieces.into_iter();
        loop {
            let s = dec.step(&pending)?;
            assert!(s.consumed <= pending.len());
            if let Some(r) = s.data.clone() {
                assert!(r.end <= s.consumed && !r.is_empty(), "{s:?}");
                out.payload.extend_from_slice(&pending[r]);
            }
            out.consumed += s.consumed;
            pending.drain(..s.consumed);
            if s.done {
                assert!(dec.is_done());
                out.done = true;
                return Ok(out);
            }
            if s.consumed == 0 {
                if at == input.len() {
                    return Ok(out);
                }
                let n = sizes
                    .next()
                    .unwrap_or(input.len() - at)
                    .min(input.len() - at);
                pending.extend_from_slice(&input[at..at + n]);
                at += n;
            }
        }
    }

    fn whole(input: &[u8]) -> Result<Outcome, BodyError> {
        feed(input, [input.len()])
    }

    fn complete(consumed: usize) -> Outcome {
        Outcome {
            payload: PAYLOAD.to_vec(),
            consumed,
            done: true,
        }
    }

    #[track_caller]
    fn assert_malformed(input: &[u8]) {
        let r = whole(input);
        assert!(
            matches!(r, Err(BodyError::Malformed(_))),
            "{:?} gave {r:?}",
            String::from_utf8_lossy(input)
        );
        // Byte by byte the error is the same (never "need more" forever).
        assert_eq!(feed(input, std::iter::repeat(1)), r);
    }

    fn chunked(parts: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for p in parts {
            write_chunk_header(p.len(), &mut v);
            v.extend_from_slice(p);
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(LAST_CHUNK);
        v
    }

    #[test]
    fn a_multi_chunk_body_with_extensions_and_trailers_decodes_whole() {
        assert_eq!(whole(BODY).unwrap(), complete(BODY.len()));
    }

    #[test]
    fn a_body_fed_byte_by_byte_decodes_the_same() {
        assert_eq!(
            feed(BODY, std::iter::repeat(1)).unwrap(),
            complete(BODY.len())
        );
    }

    #[test]
    fn a_body_split_at_every_point_decodes_the_same() {
        for split in 0..=BODY.len() {
            assert_eq!(
                feed(BODY, [split, BODY.len()]).unwrap(),
                complete(BODY.len()),
                "split at {split}"
            );
        }
    }

    #[test]
    fn bytes_after_the_body_are_never_consumed() {
        let mut input = BODY.to_vec();
        input.extend_from_slice(NEXT);
        for pieces in [
            vec![input.len()],
            vec![1; input.len()],
            vec![7; input.len()],
        ] {
            assert_eq!(feed(&input, pieces).unwrap(), complete(BODY.len()));
        }
        for split in 0..=input.len() {
            assert_eq!(
                feed(&input, [split, input.len()]).unwrap(),
                complete(BODY.len())
            );
        }
    }

    #[test]
    fn one_step_returns_one_data_range_and_the_framing_around_it() {
        let mut dec = ChunkedDecoder::new();
        let input = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nNEXT";
        let s = dec.step(input).unwrap();
        assert_eq!(
            s,
            Step {
                consumed: 11,
                data: Some(3..6),
                done: false
            }
        );
        let rest = &input[11..];
        let s = dec.step(rest).unwrap();
        assert_eq!(
            s,
            Step {
                consumed: 4 + 5,
                data: Some(0..2),
                done: true
            }
        );
        assert_eq!(&rest[9..], b"NEXT");
        assert!(dec.is_done());
        assert_eq!(
            dec.step(b"more").unwrap(),
            Step {
                consumed: 0,
                data: None,
                done: true
            }
        );
    }

    #[test]
    fn data_is_consumed_as_far_as_it_is_available() {
        let mut dec = ChunkedDecoder::new();
        let s = dec.step(b"a\r\n0123").unwrap();
        assert_eq!(
            s,
            Step {
                consumed: 7,
                data: Some(3..7),
                done: false
            }
        );
        let s = dec.step(b"45").unwrap();
        assert_eq!(
            s,
            Step {
                consumed: 2,
                data: Some(0..2),
                done: false
            }
        );
        let s = dec.step(b"6789\r").unwrap();
        assert_eq!(
            s,
            Step {
                consumed: 4,
                data: Some(0..4),
                done: false
            }
        );
        assert_eq!(dec.step(b"\r").unwrap().consumed, 0);
        assert_eq!(dec.step(b"\r\n0\r\n").unwrap().consumed, 5);
        assert!(!dec.is_done());
        assert_eq!(
            dec.step(b"\r\n").unwrap(),
            Step {
                consumed: 2,
                data: None,
                done: true
            }
        );
    }

    #[test]
    fn incomplete_framing_lines_are_not_consumed() {
        let mut dec = ChunkedDecoder::new();
        for partial in [&b""[..], b"1", b"1f", b"1f;", b"1f;a=\"x", b"1f\r"] {
            assert_eq!(
                dec.step(partial).unwrap(),
                Step {
                    consumed: 0,
                    data: None,
                    done: false
                }
            );
        }
        let mut dec = ChunkedDecoder::new();
        assert_eq!(dec.step(b"0\r\nX-T: 1").unwrap().consumed, 3);
        assert_eq!(dec.step(b"X-T: 1").unwrap().consumed, 0);
        assert_eq!(dec.step(b"X-T: 1\r\n\r").unwrap().consumed, 8);
        assert!(!dec.is_done());
    }

    #[test]
    fn trailer_fields_are_reported() {
        let mut dec = ChunkedDecoder::new();
        assert!(dec.step(b"1\r\na\r\n0\r\n\r\n").unwrap().done);
        assert!(!dec.has_trailers());
        let mut dec = ChunkedDecoder::new();
        dec.step(b"0\r\nX: 1\r\n").unwrap();
        assert!(dec.has_trailers() && !dec.is_done());
    }

    #[test]
    fn an_empty_body_is_just_the_last_chunk() {
        let out = whole(b"0\r\n\r\n").unwrap();
        assert_eq!(
            out,
            Outcome {
                payload: vec![],
                consumed: 5,
                done: true
            }
        );
    }

    #[test]
    fn uppercase_and_leading_zero_sizes_are_accepted() {
        let out = whole(b"0000000000000002\r\nab\r\nA\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!(out.payload, b"ab0123456789");
    }

    #[test]
    fn a_size_is_limited_by_its_value_not_its_digit_count() {
        let mut dec = ChunkedDecoder::new();
        let s = dec.step(b"ffffffffffffffff\r\nabc").unwrap();
        assert_eq!(
            s,
            Step {
                consumed: 21,
                data: Some(18..21),
                done: false
            }
        );
        assert_malformed(b"10000000000000000\r\n");
        assert_malformed(b"0ffffffffffffffff0\r\n");
        let out = whole(b"00000000000000000000000000000005\r\nhello\r\n0000\r\n\r\n").unwrap();
        assert_eq!(out.payload, b"hello");
        let mut dec = ChunkedDecoder::new();
        let s = dec.step(b"0000000000000000ffffffffffffffff\r\n").unwrap();
        assert_eq!(s.consumed, 34);
    }

    #[test]
    fn written_chunks_decode_back() {
        let big = vec![7u8; 70_000];
        let input = chunked(&[b"x", &big, b"hello"]);
        let out = whole(&input).unwrap();
        assert_eq!(out.consumed, input.len());
        assert_eq!(out.payload.len(), 1 + big.len() + 5);
        assert_eq!(&input[..6], b"1\r\nx\r\n");
        let mut h = Vec::new();
        write_chunk_header(70_000, &mut h);
        assert_eq!(h, b"11170\r\n");
    }

    #[test]
    fn a_bad_chunk_size_is_malformed() {
        for input in [
            &b"\r\n"[..],
            b"g\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b"0x5\r\n",
            b" 5\r\n",
            b";a\r\n",
            b"5g\r\n",
            b"\xff\r\n",
        ] {
            assert_malformed(input);
        }
    }

    #[test]
    fn a_bare_lf_in_chunk_framing_is_malformed() {
        for input in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5;a=b\n",
            b"5;a=\"b\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"0\n\r\n",
            b"0\r\n\n",
            b"0\r\nX: a\n\r\n",
        ] {
            assert_malformed(input);
        }
    }

    #[test]
    fn a_bare_cr_in_chunk_framing_is_malformed() {
        for input in [
            &b"5\rhello"[..],
            b"5;a\rx",
            b"5\r\nhello\rx",
            b"0\r\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
            b"0\r\n\rx",
            b"5;a=\"b\rc\"\r\n",
        ] {
            assert_malformed(input);
        }
    }

    #[test]
    fn a_missing_crlf_after_chunk_data_is_malformed() {
        assert_malformed(b"5\r\nhelloX\r\n0\r\n\r\n");
        assert_malformed(b"5\r\nhello0\r\n\r\n");
        // Data longer than its declared size.
        assert_malformed(b"3\r\nhello\r\n0\r\n\r\n");
    }

    #[test]
    fn malformed_chunk_extensions_are_refused() {
        for input in [
            &b"5 \r\n"[..],
            b"5\t\r\n",
            b"5;\r\n",
            b"5; \r\n",
            b"5;=v\r\n",
            b"5;a=\r\n",
            b"5;a= \r\n",
            b"5;a b\r\n",
            b"5;a \r\n",
            b"5;a=b \r\n",
            b"5;a=b c\r\n",
            b"5;a=\"b\"c\r\n",
            b"5;a=\"b\" \r\n",
            b"5;a(b)\r\n",
            b"5;a=b@\r\n",
            b"5;a=\"\x01\"\r\n",
            b"5;a=\"\\\x01\"\r\n",
            b"5;a==b\r\n",
            b"5;;a\r\n",
            b"5,a\r\n",
            b"5;a=\"x\r\n",
        ] {
            assert_malformed(input);
        }
    }

    #[test]
    fn well_formed_chunk_extensions_are_accepted() {
        for line in [
            &b"1;a"[..],
            b"1 ;a",
            b"1\t; a",
            b"1;a=b",
            b"1;a = b",
            b"1 ; a\t=\t\"q s\"",
            b"1;a=\"\"",
            b"1;a=\"\\\"\\\\\";b;c=d",
            b"1;a=\"\xe9\"",
            b"1;!#$%&'*+-.^_`|~=x",
        ] {
            let mut input = line.to_vec();
            input.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
            let out = whole(&input).unwrap_or_else(|e| panic!("{line:?}: {e:?}"));
            assert_eq!(out.payload, b"z");
            assert!(out.done);
        }
    }

    #[test]
    fn malformed_trailer_fields_are_refused() {
        for trailer in [
            &b"NoColon\r\n"[..],
            b": v\r\n",
            b"X : v\r\n",
            b"X\t: v\r\n",
            b" X: v\r\n",
            b"X: a\r\n b\r\n",
            b"X(y): v\r\n",
            b"X: a\x00b\r\n",
            b"X: a\x7f\r\n",
            b"X: a\x01\r\n",
        ] {
            let mut input = b"1\r\na\r\n0\r\n".to_vec();
            input.extend_from_slice(trailer);
            input.extend_from_slice(b"\r\n");
            assert_malformed(&input);
        }
    }

    #[test]
    fn a_chunk_size_line_past_its_limit_is_too_large() {
        let mut input = b"5;a=\"".to_vec();
        input.resize(MAX_CHUNK_LINE, b'x');
        let mut dec = ChunkedDecoder::new();
        assert_eq!(dec.step(&input[..MAX_CHUNK_LINE - 1]).unwrap().consumed, 0);
        assert!(matches!(dec.step(&input), Err(BodyError::TooLarge(_))));
        // A line of exactly the limit is fine.
        let mut line = b"1;a=\"".to_vec();
        line.resize(MAX_CHUNK_LINE - 3, b'x');
        line.extend_from_slice(b"\"\r\n");
        assert_eq!(line.len(), MAX_CHUNK_LINE);
        assert_eq!(
            ChunkedDecoder::new().step(&line).unwrap().consumed,
            MAX_CHUNK_LINE
        );
    }

    #[test]
    fn a_trailer_section_past_its_limit_is_too_large() {
        let mut input = b"0\r\n".to_vec();
        let line = format!("X-Pad: {}\r\n", "p".repeat(1000));
        while input.len() < 3 + MAX_TRAILER_SECTION {
            input.extend_from_slice(line.as_bytes());
        }
        assert!(matches!(whole(&input), Err(BodyError::TooLarge(_))));
        assert!(matches!(
            feed(&input, [100; 200]),
            Err(BodyError::TooLarge(_))
        ));
        // One line that never ends.
        let mut long = b"0\r\nX: ".to_vec();
        long.resize(3 + MAX_TRAILER_SECTION, b'v');
        assert!(matches!(whole(&long), Err(BodyError::TooLarge(_))));
    }

    #[test]
    fn a_trailer_section_of_exactly_the_limit_is_accepted() {
        let mut trailers = Vec::new();
        while trailers.len() + 13 <= MAX_TRAILER_SECTION - 2 - 6 {
            trailers.extend_from_slice(b"X-Pad: 1234\r\n");
        }
        let fill = MAX_TRAILER_SECTION - 2 - trailers.len() - b"Y: \r\n".len();
        trailers.extend_from_slice(format!("Y: {}\r\n", "z".repeat(fill)).as_bytes());
        trailers.extend_from_slice(b"\r\n");
        assert_eq!(trailers.len(), MAX_TRAILER_SECTION);
        let mut input = b"0\r\n".to_vec();
        input.extend_from_slice(&trailers);
        assert_eq!(whole(&input).unwrap().consumed, input.len());
    }

    #[test]
    fn errors_are_sticky() {
        let mut dec = ChunkedDecoder::new();
        let e = dec.step(b"zz\r\n").unwrap_err();
        assert_eq!(dec.step(b"5\r\nhello\r\n").unwrap_err(), e);
        assert!(!dec.is_done());
    }

    #[test]
    fn garbage_is_refused_before_a_line_completes() {
        let mut dec = ChunkedDecoder::new();
        assert!(dec.step(b"GET / HTTP/1.1").is_err());
    }
}
