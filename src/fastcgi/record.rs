//! FastCGI records (the FastCGI 1.0 specification): writing a request's records and reading
//! a response's, as pure functions over byte buffers so the exchange owns all I/O.

/// The protocol version every record carries.
const VERSION: u8 = 1;
/// One request at a time per connection: its id is always 1 (0 is for management records).
pub const REQUEST_ID: u16 = 1;
/// Record header bytes.
pub const HEADER_LEN: usize = 8;
/// The largest record content (the length field is 16 bits).
pub const MAX_CONTENT: usize = 65535;

pub const BEGIN_REQUEST: u8 = 1;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;

const ROLE_RESPONDER: u16 = 1;
const FLAG_KEEP_CONN: u8 = 1;

/// Appends a record header for `len` content bytes (no padding).
pub fn header(out: &mut Vec<u8>, kind: u8, len: usize) {
    debug_assert!(len <= MAX_CONTENT);
    let id = REQUEST_ID.to_be_bytes();
    let n = (len as u16).to_be_bytes();
    out.extend_from_slice(&[VERSION, kind, id[0], id[1], n[0], n[1], 0, 0]);
}

/// Appends FCGI_BEGIN_REQUEST for the responder role; `keep_conn` asks the application to
/// leave the connection open after the request (so it can be pooled).
pub fn begin_request(out: &mut Vec<u8>, keep_conn: bool) {
    header(out, BEGIN_REQUEST, 8);
    let role = ROLE_RESPONDER.to_be_bytes();
    let flags = if keep_conn { FLAG_KEEP_CONN } else { 0 };
    out.extend_from_slice(&[role[0], role[1], flags, 0, 0, 0, 0, 0]);
}

/// Appends one name-value pair in FastCGI's length-prefixed encoding.
pub fn name_value(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    for len in [name.len(), value.len()] {
        if len < 128 {
            out.push(len as u8);
        } else {
            out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
        }
    }
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// Appends `content` as records of `kind`, split at the record size limit, and the empty
/// record that closes the stream when `close` is set.
pub fn stream(out: &mut Vec<u8>, kind: u8, content: &[u8], close: bool) {
    for part in content.chunks(MAX_CONTENT) {
        header(out, kind, part.len());
        out.extend_from_slice(part);
    }
    if close {
        header(out, kind, 0);
    }
}

/// What the next bytes of a response are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `len` bytes of FCGI_STDOUT content at `start` in the input given.
    Stdout { start: usize, len: usize },
    /// Likewise for FCGI_STDERR.
    Stderr { start: usize, len: usize },
    /// FCGI_END_REQUEST: the request is over.
    End {
        app_status: u32,
        protocol_status: u8,
    },
    /// More input is needed.
    NeedMore,
}

/// A response the application sent that breaks the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    /// Inside a record's content: `left` bytes of it, then `padding`.
    Content {
        kind: u8,
        left: usize,
        padding: usize,
    },
    Padding {
        left: usize,
    },
}

/// Reads response records incrementally; stream content is handed out as it arrives, without
/// waiting for whole records.
#[derive(Debug, Clone, Copy)]
pub struct Reader {
    state: State,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            state: State::Header,
        }
    }
}

impl Reader {
    /// The next event from `input`, and how many bytes of it were consumed (content bytes
    /// an event names are consumed with it).
    pub fn next(&mut self, input: &[u8]) -> Result<(usize, Event), Invalid> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.state {
                State::Header => {
                    if rest.len() < HEADER_LEN {
                        return Ok((used, Event::NeedMore));
                    }
                    if rest[0] != VERSION {
                        return Err(Invalid("FastCGI record of an unknown version"));
                    }
                    let kind = rest[1];
                    let id = u16::from_be_bytes([rest[2], rest[3]]);
                    let left = u16::from_be_bytes([rest[4], rest[5]]) as usize;
                    let padding = rest[6] as usize;
                    if id != REQUEST_ID && id != 0 {
                        return Err(Invalid("FastCGI record for another request"));
                    }
                    if kind == END_REQUEST {
                        if left != 8 {
                            return Err(Invalid("FastCGI END_REQUEST of the wrong size"));
                        }
                        if rest.len() < HEADER_LEN + 8 + padding {
                            return Ok((used, Event::NeedMore));
                        }
                        let b = &rest[HEADER_LEN..];
                        used += HEADER_LEN + 8 + padding;
                        return Ok((
                            used,
                            Event::End {
                                app_status: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                                protocol_status: b[4],
                            },
                        ));
                    }
                    used += HEADER_LEN;
                    self.state = State::Content {
                        kind,
                        left,
                        padding,
                    };
                }
                State::Content {
                    kind,
                    left,
                    padding,
                } => {
                    if left == 0 {
                        self.state = State::Padding { left: padding };
                        continue;
                    }
                    if rest.is_empty() {
                        return Ok((used, Event::NeedMore));
                    }
                    let take = left.min(rest.len());
                    self.state = State::Content {
                        kind,
                        left: left - take,
                        padding,
                    };
                    let start = used;
                    used += take;
                    match kind {
                        STDOUT => return Ok((used, Event::Stdout { start, len: take })),
                        STDERR => return Ok((used, Event::Stderr { start, len: take })),
                        // Management answers and unknown types carry nothing for the client.
                        _ => {}
                    }
                }
                State::Padding { left } => {
                    let take = left.min(rest.len());
                    used += take;
                    if take < left {
                        self.state = State::Padding { left: left - take };
                        return Ok((used, Event::NeedMore));
                    }
                    self.state = State::Header;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, content: &[u8], padding: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let n = (content.len() as u16).to_be_bytes();
        out.extend_from_slice(&[1, kind, 0, 1, n[0], n[1], padding, 0]);
        out.extend_from_slice(content);
        out.extend(std::iter::repeat_n(0u8, padding as usize));
        out
    }

    fn end(app: u32, proto: u8) -> Vec<u8> {
        let a = app.to_be_bytes();
        record(END_REQUEST, &[a[0], a[1], a[2], a[3], proto, 0, 0, 0], 0)
    }

    /// Feeds `input` in pieces of `step` bytes; returns stdout, stderr and the end.
    fn read_all(input: &[u8], step: usize) -> (Vec<u8>, Vec<u8>, Option<(u32, u8)>) {
        let mut r = Reader::default();
        let (mut out, mut err, mut done) = (Vec::new(), Vec::new(), None);
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        while done.is_none() {
            let (used, ev) = r.next(&buf).unwrap();
            match ev {
                Event::Stdout { start, len } => out.extend_from_slice(&buf[start..start + len]),
                Event::Stderr { start, len } => err.extend_from_slice(&buf[start..start + len]),
                Event::End {
                    app_status,
                    protocol_status,
                } => done = Some((app_status, protocol_status)),
                Event::NeedMore => {
                    if fed == input.len() {
                        buf.drain(..used);
                        break;
                    }
                    let to = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..to]);
                    fed = to;
                }
            }
            buf.drain(..used);
        }
        (out, err, done)
    }

    #[test]
    fn stdout_stderr_and_end_come_out_whatever_the_read_sizes() {
        let mut input = record(STDOUT, b"Status: 201\r\n\r\nhel", 5);
        input.extend(record(STDERR, b"warning", 1));
        input.extend(record(9 + 1, b"\x00\x00", 0)); // GET_VALUES_RESULT: skipped
        input.extend(record(STDOUT, b"lo", 0));
        input.extend(record(STDOUT, b"", 0));
        input.extend(end(7, 0));
        for step in [1, 2, 3, 7, 8, 9, 64, 10_000] {
            let (out, err, done) = read_all(&input, step);
            assert_eq!(out, b"Status: 201\r\n\r\nhello", "step {step}");
            assert_eq!(err, b"warning", "step {step}");
            assert_eq!(done, Some((7, 0)), "step {step}");
        }
    }

    #[test]
    fn truncated_input_never_ends() {
        let mut input = record(STDOUT, b"abc", 0);
        input.extend(&end(0, 0)[..12]);
        assert_eq!(read_all(&input, 4).2, None);
    }

    #[test]
    fn protocol_violations_are_errors() {
        let mut bad_version = record(STDOUT, b"x", 0);
        bad_version[0] = 2;
        let mut other_id = record(STDOUT, b"x", 0);
        other_id[3] = 2;
        let mut short_end = record(END_REQUEST, b"1234", 0);
        short_end.extend_from_slice(&[0; 4]);
        for input in [bad_version, other_id, short_end] {
            assert!(Reader::default().next(&input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn request_records_are_encoded_as_the_spec_lays_them_out() {
        let mut out = Vec::new();
        begin_request(&mut out, true);
        assert_eq!(out, [1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
        out.clear();
        name_value(&mut out, b"AB", &[b'x'; 200]);
        assert_eq!(&out[..5], &[2, 0x80, 0, 0, 200]);
        assert_eq!(&out[5..7], b"AB");
        assert_eq!(out.len(), 7 + 200);
        out.clear();
        stream(&mut out, STDIN, &vec![b'y'; MAX_CONTENT + 10], true);
        assert_eq!(&out[..8], &[1, STDIN, 0, 1, 0xff, 0xff, 0, 0]);
        let second = HEADER_LEN + MAX_CONTENT;
        assert_eq!(&out[second..second + 8], &[1, STDIN, 0, 1, 0, 10, 0, 0]);
        assert_eq!(&out[out.len() - 8..], &[1, STDIN, 0, 1, 0, 0, 0, 0]);
    }
}
