//! A raw HTTP/1.1 client: writes exactly the bytes a test gives it and parses what comes back
//! strictly, with a deadline on every operation so a test never hangs.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long one client operation (a response, a close) may take before the test fails.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// One parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body came chunked.
    pub chunked: bool,
    pub trailers: Vec<(String, String)>,
    /// The raw head bytes.
    pub head: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn head_text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// Whether the response announces `Connection: close`.
    pub fn closes(&self) -> bool {
        self.header_all("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

pub struct Client {
    sock: Sock,
    /// Received, not yet consumed.
    buf: Vec<u8>,
    eof: bool,
}

/// What ended a read that found no complete response.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed (or reset) the connection; carries the bytes received before that.
    Closed(Vec<u8>),
    TimedOut(Vec<u8>),
    /// The bytes received are not a valid HTTP/1.1 response.
    Invalid(String, Vec<u8>),
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed(b) => write!(
                f,
                "connection closed after {:?}",
                String::from_utf8_lossy(b)
            ),
            ReadError::TimedOut(b) => write!(
                f,
                "timed out after receiving {:?}",
                String::from_utf8_lossy(b)
            ),
            ReadError::Invalid(why, b) => write!(
                f,
                "invalid response ({why}): {:?}",
                String::from_utf8_lossy(b)
            ),
            ReadError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect_timeout(&addr, OP_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_nodelay(true).unwrap();
        Client::from_tcp(s)
    }

    pub fn from_tcp(s: TcpStream) -> Client {
        s.set_write_timeout(Some(OP_TIMEOUT)).unwrap();
        Client {
            sock: Sock::Tcp(s),
            buf: Vec::new(),
            eof: false,
        }
    }

    pub fn connect_unix(path: &Path) -> Client {
        let s =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        s.set_write_timeout(Some(OP_TIMEOUT)).unwrap();
        Client {
            sock: Sock::Unix(s),
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Writes all of `bytes` in one call.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) -> &mut Self {
        let bytes = bytes.as_ref();
        let res = match &mut self.sock {
            Sock::Tcp(s) => s.write_all(bytes),
            Sock::Unix(s) => s.write_all(bytes),
        };
        res.unwrap_or_else(|e| panic!("client write failed: {e}"));
        self
    }

    /// Like `send`, but reports a failed write instead of panicking (the peer may be gone).
    pub fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        match &mut self.sock {
            Sock::Tcp(s) => s.write_all(bytes.as_ref()),
            Sock::Unix(s) => s.write_all(bytes.as_ref()),
        }
    }

    /// Writes `bytes` in pieces of `piece` bytes with `pause` between them (split reads).
    pub fn send_split(
        &mut self,
        bytes: impl AsRef<[u8]>,
        piece: usize,
        pause: Duration,
    ) -> &mut Self {
        for (i, p) in bytes.as_ref().chunks(piece).enumerate() {
            if i > 0 {
                std::thread::sleep(pause);
            }
            self.send(p);
        }
        self
    }

    /// Half-closes the sending side.
    pub fn shutdown_write(&mut self) {
        let _ = match &self.sock {
            Sock::Tcp(s) => s.shutdown(Shutdown::Write),
            Sock::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }

    /// One read with a deadline; Ok(0) at end of stream.
    fn read_some(&mut self, deadline: Instant) -> Result<usize, ReadError> {
        if self.eof {
            return Ok(0);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ReadError::TimedOut(self.buf.clone()));
        }
        let left = Some(deadline - now);
        let mut tmp = [0u8; 64 * 1024];
        let res = match &mut self.sock {
            Sock::Tcp(s) => s.set_read_timeout(left).and_then(|_| s.read(&mut tmp)),
            Sock::Unix(s) => s.set_read_timeout(left).and_then(|_| s.read(&mut tmp)),
        };
        match res {
            // Signals reach test threads (the proxy's runtimes share the process): retry.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.read_some(deadline),
            Ok(0) => {
                self.eof = true;
                Ok(0)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(ReadError::TimedOut(self.buf.clone()))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                self.eof = true;
                Ok(0)
            }
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    /// Reads until at least `n` bytes are buffered; Closed/TimedOut otherwise.
    fn fill_to(&mut self, n: usize, deadline: Instant) -> Result<(), ReadError> {
        while self.buf.len() < n {
            if self.read_some(deadline)? == 0 {
                return Err(ReadError::Closed(self.buf.clone()));
            }
        }
        Ok(())
    }

    /// Position just after the next CRLF at or after `from`, reading as needed.
    fn line_end(&mut self, from: usize, deadline: Instant) -> Result<usize, ReadError> {
        loop {
            if let Some(i) = self.buf[from.min(self.buf.len())..]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                return Ok(from + i + 2);
            }
            if self.read_some(deadline)? == 0 {
                return Err(ReadError::Closed(self.buf.clone()));
            }
        }
    }

    /// Reads the next response (an interim 1xx one too). `no_body` for answers to HEAD.
    pub fn try_read_response(&mut self, no_body: bool) -> Result<Response, ReadError> {
        let deadline = Instant::now() + OP_TIMEOUT;
        let mut resp = loop {
            if !self.buf.is_empty() {
                let mut hs = [httparse::EMPTY_HEADER; 128];
                let mut r = httparse::Response::new(&mut hs);
                match r.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let resp = Response {
                            minor: r.version.unwrap_or(1),
                            status: r.code.unwrap_or(0),
                            reason: r.reason.unwrap_or("").to_string(),
                            headers: r
                                .headers
                                .iter()
                                .map(|h| {
                                    (
                                        h.name.to_string(),
                                        String::from_utf8_lossy(h.value).into_owned(),
                                    )
                                })
                                .collect(),
                            body: Vec::new(),
                            chunked: false,
                            trailers: Vec::new(),
                            head: self.buf[..len].to_vec(),
                        };
                        self.buf.drain(..len);
                        break resp;
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => return Err(ReadError::Invalid(e.to_string(), self.buf.clone())),
                }
            }
            if self.read_some(deadline)? == 0 {
                return Err(ReadError::Closed(self.buf.clone()));
            }
        };
        let te = resp
            .header("transfer-encoding")
            .map(|v| v.trim().to_ascii_lowercase());
        let cls: Vec<String> = resp
            .header_all("content-length")
            .into_iter()
            .map(String::from)
            .collect();
        if te.is_some() && !cls.is_empty() {
            return Err(ReadError::Invalid(
                "both Transfer-Encoding and Content-Length".into(),
                resp.head.clone(),
            ));
        }
        let bodiless = no_body || resp.status < 200 || resp.status == 204 || resp.status == 304;
        if bodiless {
            return Ok(resp);
        }
        let head = resp.head.clone();
        self.read_body(&mut resp, te, &cls, deadline).map_err(|e| {
            // Show the head with whatever part of the body arrived.
            let with_head = |b: Vec<u8>| [head.clone(), b].concat();
            match e {
                ReadError::Closed(b) => ReadError::Closed(with_head(b)),
                ReadError::TimedOut(b) => ReadError::TimedOut(with_head(b)),
                ReadError::Invalid(why, b) => ReadError::Invalid(why, with_head(b)),
                e => e,
            }
        })?;
        Ok(resp)
    }

    fn read_body(
        &mut self,
        resp: &mut Response,
        te: Option<String>,
        cls: &[String],
        deadline: Instant,
    ) -> Result<(), ReadError> {
        if let Some(te) = te {
            if te != "chunked" {
                return Err(ReadError::Invalid(
                    format!("transfer-encoding {te}"),
                    Vec::new(),
                ));
            }
            resp.chunked = true;
            loop {
                let end = self.line_end(0, deadline)?;
                let line = String::from_utf8_lossy(&self.buf[..end - 2]).into_owned();
                let size_text = line.split(';').next().unwrap_or("").trim().to_string();
                let size = usize::from_str_radix(&size_text, 16).map_err(|_| {
                    ReadError::Invalid(format!("chunk size {line:?}"), self.buf.clone())
                })?;
                self.buf.drain(..end);
                if size == 0 {
                    loop {
                        let end = self.line_end(0, deadline)?;
                        let t: Vec<u8> = self.buf.drain(..end).collect();
                        if t.len() == 2 {
                            break;
                        }
                        let t = String::from_utf8_lossy(&t[..t.len() - 2]).into_owned();
                        let (n, v) = t.split_once(':').ok_or_else(|| {
                            ReadError::Invalid(format!("trailer {t:?}"), Vec::new())
                        })?;
                        resp.trailers
                            .push((n.trim().to_string(), v.trim().to_string()));
                    }
                    return Ok(());
                }
                self.fill_to(size + 2, deadline)?;
                if &self.buf[size..size + 2] != b"\r\n" {
                    return Err(ReadError::Invalid(
                        "chunk data not followed by CRLF".into(),
                        self.buf.clone(),
                    ));
                }
                resp.body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
            }
        } else if let Some(cl) = cls.first() {
            if cls.iter().any(|v| v != cl) {
                return Err(ReadError::Invalid(
                    "differing Content-Length".into(),
                    Vec::new(),
                ));
            }
            let n: usize = cl
                .trim()
                .parse()
                .map_err(|_| ReadError::Invalid(format!("content-length {cl:?}"), Vec::new()))?;
            self.fill_to(n, deadline)?;
            resp.body = self.buf.drain(..n).collect();
        } else {
            // Close-delimited.
            while self.read_some(deadline)? > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(())
    }

    /// The next response; panics with what arrived when there is none.
    pub fn read_response(&mut self) -> Response {
        self.try_read_response(false)
            .unwrap_or_else(|e| panic!("expected a response: {e}"))
    }

    /// The next response to a HEAD request (no body follows its head).
    pub fn read_head_response(&mut self) -> Response {
        self.try_read_response(true)
            .unwrap_or_else(|e| panic!("expected a response: {e}"))
    }

    /// The next final (non-1xx) response, skipping interim ones.
    pub fn read_final_response(&mut self) -> Response {
        loop {
            let r = self.read_response();
            if r.status >= 200 {
                return r;
            }
        }
    }

    /// Sends `bytes` and reads one response.
    pub fn request(&mut self, bytes: impl AsRef<[u8]>) -> Response {
        self.send(bytes);
        self.read_response()
    }

    /// Everything until the peer closes (fails after `OP_TIMEOUT`).
    pub fn read_until_close(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + OP_TIMEOUT;
        loop {
            match self.read_some(deadline) {
                Ok(0) => return std::mem::take(&mut self.buf),
                Ok(_) => {}
                Err(e) => panic!("expected the connection to close: {e}"),
            }
        }
    }

    /// Asserts the peer closes the connection without sending anything more.
    pub fn expect_closed(&mut self) {
        let rest = self.read_until_close();
        assert!(
            rest.is_empty(),
            "expected the connection to close with nothing more, got {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// Asserts nothing arrives and the connection stays open for `wait`.
    pub fn expect_silence(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        match self.read_some(deadline) {
            Err(ReadError::TimedOut(b)) if b.is_empty() => {}
            Ok(0) => panic!("expected the connection to stay open, but it closed"),
            Ok(_) => panic!(
                "expected silence, got {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => panic!("expected silence: {e}"),
        }
    }

    /// Whether the peer closed (or reset) the connection within `wait`, with nothing sent.
    pub fn is_closed_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        matches!(self.read_some(deadline), Ok(0)) && self.buf.is_empty()
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
}

/// A GET on a fresh connection with `Connection: close`; returns the response.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    let mut c = Client::connect(addr);
    c.request(format!(
        "GET {path} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n"
    ))
}

/// `GET path HTTP/1.1` with Host `test.local` and the given extra header lines.
pub fn get_req(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n{extra}\r\n")
}

/// Starts a `PUT /upload` of `size` bytes on a fresh connection to `addr`, written from another
/// thread as a client that sends its whole body before reading (the thread returns how much it
/// could send); the returned client reads the answer.
pub fn start_upload(addr: SocketAddr, size: usize) -> (Client, std::thread::JoinHandle<usize>) {
    let sock = TcpStream::connect(addr).unwrap();
    let mut w = sock.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let head = format!("PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n");
        let _ = w.write_all(head.as_bytes());
        let chunk = vec![b'u'; 64 * 1024];
        let mut sent = 0;
        while sent < size {
            if w.write_all(&chunk[..chunk.len().min(size - sent)]).is_err() {
                break;
            }
            sent += chunk.len().min(size - sent);
        }
        sent
    });
    (Client::from_tcp(sock), writer)
}

/// The `Content-Length` of a request head a test backend read (0 when it has none).
pub fn head_content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Checks that an upload started by [`start_upload`] got the backend's early 401 at once, and
/// that a lingering close let the client send all `size` bytes.
pub fn expect_early_401(
    c: &mut Client,
    writer: std::thread::JoinHandle<usize>,
    started: Instant,
    size: usize,
) {
    let r = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("the client got no answer: {e}"));
    assert_eq!(
        (r.status, r.text().as_str()),
        (401, "unauthorized\n"),
        "{}",
        r.head_text()
    );
    assert!(
        r.closes(),
        "the rest of the upload is not read: the connection closes"
    );
    assert_eq!(r.header("www-authenticate"), Some("Basic"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the answer waited for {:?}",
        started.elapsed()
    );
    assert!(
        c.is_closed_within(Duration::from_secs(15)),
        "the connection closes after lingering"
    );
    // Without a lingering close the upload would meet a reset part way.
    assert_eq!(
        writer.join().unwrap(),
        size,
        "the client could send its whole upload"
    );
}
