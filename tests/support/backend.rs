//! A real HTTP/1.1 backend on 127.0.0.1 (or a Unix socket): one thread per connection,
//! keep-alive and pipelining safe, counting connections and requests and recording every
//! request it fully received.
//!
//! It answers by path:
//!
//! | path | answer |
//! | --- | --- |
//! | anything else | 200, body `NAME\n`, with `X-Backend: NAME` and `X-Path: <target>` |
//! | `/echo` | 200, body = the raw request head as received |
//! | `/echo-body` | 200, body = the request body |
//! | `/chunked` | chunked `hello, chunked world` in three chunks, trailer `X-Trailer: done` |
//! | `/chunked?n=N` | N pattern bytes in chunks of at most 4000 bytes, same trailer |
//! | `/close` (`?n=N`) | close-delimited (no Content-Length), then the backend closes |
//! | `/http10` | an HTTP/1.0 response without Content-Length, then close |
//! | `/big?n=N` | N pattern bytes (see [`pattern`]) with Content-Length |
//! | `/status/NNN` | that status; no body for 1xx/204/304 |
//! | `/sleep?ms=N` | 200 `slept` after N ms |
//! | `/stall` | a head promising 10 bytes, 2 bytes, then silence for 5 s |
//! | `/continue` | 100 Continue when asked (`Expect`), then 200 `got N bytes` |
//! | `/early-hints` | 103 Early Hints with a Link field, then 200 `after hints` |
//! | `/continue/reject` | 417 without reading the body, then close |
//! | `/resp-headers` | 200 with X-Internal-Secret, X-Internal-Id, Server, Location, X-Keep |
//! | `/hop` | 200 with hop-by-hop fields (Connection-named, Keep-Alive, Proxy-Connection...) |
//! | `/conn-close` | 200 with `Connection: close`, then close |
//! | `/bad/garbage` | bytes that are not HTTP, then close |
//! | `/bad/cl-te` | a response with Content-Length and Transfer-Encoding: chunked |
//! | `/bad/two-cl` | two differing Content-Length fields |
//! | `/bad/obs-fold` | a folded header line |
//! | `/bad/space-colon` | `Name : value` |
//! | `/bad/chunk` | chunked with an invalid chunk size after the head |
//! | `/bad/truncated` | Content-Length 100 with 10 bytes, then close |
//! | `/bad/empty` | close without a byte |
//! | `/bad/extra` | a complete response followed by a second, unrequested one |
//!
//! Every request is recorded only once its whole body arrived; `/sleep` and `/stall` are
//! recorded before they start waiting, so a test can wait for "the request reached the backend".

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Deterministic body bytes: `pattern(n)[i] = b'a' + (i % 26)`, then a newline every 64 bytes.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            if i % 64 == 63 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect()
}

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Request {
    /// 1-based accept order of the connection it came on.
    pub conn: usize,
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: Vec<(String, String)>,
    /// The raw head bytes, request line to blank line included.
    pub head: Vec<u8>,
    pub body: Vec<u8>,
    pub chunked: bool,
    pub trailers: Vec<(String, String)>,
}

impl Request {
    /// The first value of a field (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a field, in order.
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

    pub fn head_text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

#[derive(Default)]
struct Stats {
    accepted: AtomicUsize,
    open: AtomicUsize,
    requests: AtomicUsize,
    log: Mutex<Vec<Request>>,
    /// Notified whenever a request is recorded or a connection closes.
    changed: Condvar,
}

#[derive(Clone, Default)]
pub struct Options {
    /// Close every connection right after its response, without saying so (`Connection: close`
    /// is not sent): the proxy pools a connection the backend has already closed.
    pub close_after_response: bool,
    /// Record each request, then close the connection without answering it.
    pub drop_requests: bool,
    /// Listen on this Unix socket path instead of 127.0.0.1:0.
    pub unix: Option<PathBuf>,
}

enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Both),
            Conn::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A running backend; stops (and closes every connection) when dropped.
pub struct Backend {
    name: String,
    addr: Option<SocketAddr>,
    unix: Option<PathBuf>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<Conn>>>,
    accept: Option<JoinHandle<()>>,
}

impl Backend {
    /// A TCP backend on 127.0.0.1 with an OS-chosen port.
    pub fn start(name: &str) -> Backend {
        Backend::start_with(name, Options::default())
    }

    pub fn start_with(name: &str, opts: Options) -> Backend {
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(Vec::new()));
        let (addr, unix, listener) = match &opts.unix {
            Some(path) => {
                let _ = std::fs::remove_file(path);
                let l = UnixListener::bind(path).expect("backend: bind unix socket");
                (None, Some(path.clone()), Listener::Unix(l))
            }
            None => {
                let l = TcpListener::bind("127.0.0.1:0").expect("backend: bind 127.0.0.1:0");
                (Some(l.local_addr().unwrap()), None, Listener::Tcp(l))
            }
        };
        let accept = {
            let (name, stats, stop, conns) =
                (name.to_string(), stats.clone(), stop.clone(), conns.clone());
            std::thread::Builder::new()
                .name(format!("backend-{name}"))
                .spawn(move || accept_loop(listener, name, opts, stats, stop, conns))
                .unwrap()
        };
        Backend {
            name: name.to_string(),
            addr,
            unix,
            stats,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `127.0.0.1:PORT` (TCP backends only).
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("a TCP backend")
    }

    /// The target string for a config: `127.0.0.1:PORT` or `unix//path`.
    pub fn target(&self) -> String {
        match (&self.addr, &self.unix) {
            (Some(a), _) => a.to_string(),
            (None, Some(p)) => format!("unix/{}", p.display()),
            _ => unreachable!(),
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open (accepted and not yet closed by either side).
    pub fn open_connections(&self) -> usize {
        self.stats.open.load(Ordering::SeqCst)
    }

    /// Requests fully received so far.
    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// Every request received so far, in arrival order.
    pub fn recorded(&self) -> Vec<Request> {
        self.stats.log.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests have been received; false on timeout.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.requests.load(Ordering::SeqCst) >= n)
    }

    /// Waits until no connection is open; false on timeout.
    pub fn wait_for_no_open_connections(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.open.load(Ordering::SeqCst) == 0)
    }

    fn wait_until(&self, timeout: Duration, cond: impl Fn(&Stats) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.stats.log.lock().unwrap();
        loop {
            if cond(&self.stats) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = self
                .stats
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// The only request received; panics unless exactly one arrived (waits up to 5 s for it).
    pub fn only_request(&self) -> Request {
        assert!(
            self.wait_for_requests(1, Duration::from_secs(5)),
            "backend {} received no request",
            self.name
        );
        let log = self.recorded();
        assert_eq!(
            log.len(),
            1,
            "backend {} expected exactly one request, got {:#?}",
            self.name,
            log
        );
        log.into_iter().next().unwrap()
    }

    /// The most recent request (waits up to 5 s for one).
    pub fn last_request(&self) -> Request {
        assert!(
            self.wait_for_requests(1, Duration::from_secs(5)),
            "backend {} received no request",
            self.name
        );
        self.recorded().pop().unwrap()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        match (&self.addr, &self.unix) {
            (Some(a), _) => drop(TcpStream::connect_timeout(a, Duration::from_secs(1))),
            (None, Some(p)) => drop(UnixStream::connect(p)),
            _ => {}
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.shutdown();
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        if let Some(p) = &self.unix {
            let _ = std::fs::remove_file(p);
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

fn accept_loop(
    listener: Listener,
    name: String,
    opts: Options,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<Conn>>>,
) {
    loop {
        let conn = match &listener {
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Conn::Tcp(s)
            }),
            Listener::Unix(l) => l.accept().map(|(s, _)| Conn::Unix(s)),
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let id = stats.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        stats.open.fetch_add(1, Ordering::SeqCst);
        if let Ok(c) = conn.try_clone() {
            conns.lock().unwrap().push(c);
        }
        let (name, opts, stats) = (name.clone(), opts.clone(), stats.clone());
        let _ = std::thread::Builder::new()
            .name(format!("backend-{name}-{id}"))
            .spawn(move || {
                let mut conn = conn;
                let _ = serve(&mut conn, id, &name, &opts, &stats);
                conn.shutdown();
                // Decrement under the lock so waiters cannot miss the change.
                let _guard = stats.log.lock().unwrap();
                stats.open.fetch_sub(1, Ordering::SeqCst);
                stats.changed.notify_all();
            });
    }
}

/// Buffered reading over one connection.
struct Reader<'a> {
    conn: &'a mut Conn,
    buf: Vec<u8>,
}

impl Reader<'_> {
    /// Reads more bytes; Ok(false) at end of stream.
    fn fill(&mut self) -> io::Result<bool> {
        let mut tmp = [0u8; 16 * 1024];
        let n = loop {
            match self.conn.read(&mut tmp) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n > 0)
    }

    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.drain(..i + 2).collect::<Vec<u8>>();
                return Ok(line[..i].to_vec());
            }
            if !self.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn serve(conn: &mut Conn, id: usize, name: &str, opts: &Options, stats: &Stats) -> io::Result<()> {
    let mut rd = Reader {
        conn,
        buf: Vec::new(),
    };
    loop {
        // Head.
        let (mut req, head_len) = loop {
            if !rd.buf.is_empty() {
                let mut hs = [httparse::EMPTY_HEADER; 128];
                let mut r = httparse::Request::new(&mut hs);
                match r.parse(&rd.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let req = Request {
                            conn: id,
                            method: r.method.unwrap_or("").to_string(),
                            target: r.path.unwrap_or("").to_string(),
                            minor: r.version.unwrap_or(1),
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
                            head: rd.buf[..len].to_vec(),
                            body: Vec::new(),
                            chunked: false,
                            trailers: Vec::new(),
                        };
                        break (req, len);
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => {
                        let _ = rd.conn.write_all(
                            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbackend 400\n",
                        );
                        return Err(bad(&format!("backend could not parse a request head: {e}")));
                    }
                }
            }
            if !rd.fill()? {
                return Ok(());
            }
        };
        rd.buf.drain(..head_len);
        let (path, query) = split_target(&req.target);
        let te = req
            .header("transfer-encoding")
            .map(|v| v.to_ascii_lowercase());
        let cl = req
            .header("content-length")
            .map(|v| v.trim().parse::<usize>());
        let expects_body = te.is_some() || matches!(cl, Some(Ok(n)) if n > 0);
        let expect_continue = req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if expect_continue && expects_body {
            if path == "/continue/reject" {
                rd.conn.write_all(
                    b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 9\r\nConnection: close\r\n\r\nrejected\n",
                )?;
                return Ok(());
            }
            rd.conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        // Body.
        if let Some(te) = te {
            if te.trim() != "chunked" {
                return Err(bad("backend only understands chunked transfer-coding"));
            }
            req.chunked = true;
            loop {
                let line = rd.line()?;
                let line = String::from_utf8_lossy(&line).into_owned();
                let size_text = line.split(';').next().unwrap_or("").trim();
                let size =
                    usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
                if size == 0 {
                    loop {
                        let t = rd.line()?;
                        if t.is_empty() {
                            break;
                        }
                        let t = String::from_utf8_lossy(&t).into_owned();
                        let (n, v) = t.split_once(':').ok_or_else(|| bad("bad trailer"))?;
                        req.trailers
                            .push((n.trim().to_string(), v.trim().to_string()));
                    }
                    break;
                }
                let data = rd.take(size)?;
                req.body.extend_from_slice(&data);
                if rd.take(2)? != b"\r\n" {
                    return Err(bad("chunk data not followed by CRLF"));
                }
            }
        } else if let Some(cl) = cl {
            let n = cl.map_err(|_| bad("bad content-length"))?;
            req.body = rd.take(n)?;
        }
        // Record.
        {
            let mut log = stats.log.lock().unwrap();
            log.push(req.clone());
            stats.requests.fetch_add(1, Ordering::SeqCst);
            stats.changed.notify_all();
        }
        if opts.drop_requests {
            return Ok(());
        }
        let head_only = req.method == "HEAD";
        let keep = if req.minor == 0 {
            req.header("connection")
                .is_some_and(|v| v.to_ascii_lowercase().contains("keep-alive"))
        } else {
            !req.header("connection").is_some_and(|v| {
                v.to_ascii_lowercase()
                    .split(',')
                    .any(|t| t.trim() == "close")
            })
        };
        let ka = if req.minor == 0 && keep {
            "Connection: keep-alive\r\n"
        } else {
            ""
        };
        let num =
            |k: &str, default: usize| query.get(k).and_then(|v| v.parse().ok()).unwrap_or(default);
        let base = format!("X-Backend: {name}\r\nX-Conn-Id: {id}\r\n{ka}");
        let w = &mut *rd.conn;
        let mut close = !keep || opts.close_after_response;
        match path.as_str() {
            "/echo" => w.write_all(&reply(200, &base, &req.head, head_only))?,
            "/echo-body" => w.write_all(&reply(200, &base, &req.body, head_only))?,
            "/big" => w.write_all(&reply(200, &base, &pattern(num("n", 1000)), head_only))?,
            "/chunked" => {
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\n{base}Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n\r\n"
                )
                .into_bytes();
                if !head_only {
                    match query.get("n").and_then(|v| v.parse::<usize>().ok()) {
                        Some(n) => {
                            for piece in pattern(n).chunks(4000) {
                                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                                out.extend_from_slice(piece);
                                out.extend_from_slice(b"\r\n");
                            }
                        }
                        None => out.extend_from_slice(
                            b"7\r\nhello, \r\n8;ext=1\r\nchunked \r\n5\r\nworld\r\n",
                        ),
                    }
                    out.extend_from_slice(b"0\r\nX-Trailer: done\r\n\r\n");
                }
                w.write_all(&out)?;
            }
            "/close" => {
                let mut out = format!("HTTP/1.1 200 OK\r\n{base}Content-Type: text/plain\r\n\r\n")
                    .into_bytes();
                if !head_only {
                    match query.get("n").and_then(|v| v.parse::<usize>().ok()) {
                        Some(n) => out.extend_from_slice(&pattern(n)),
                        None => out.extend_from_slice(b"close-delimited body\n"),
                    }
                }
                w.write_all(&out)?;
                return Ok(());
            }
            "/http10" => {
                let body = if head_only { "" } else { "http/1.0 body\n" };
                w.write_all(format!("HTTP/1.0 200 OK\r\n{base}\r\n{body}").as_bytes())?;
                return Ok(());
            }
            "/sleep" => {
                std::thread::sleep(Duration::from_millis(num("ms", 100) as u64));
                w.write_all(&reply(200, &base, b"slept\n", head_only))?;
            }
            "/stall" => {
                w.write_all(
                    format!("HTTP/1.1 200 OK\r\n{base}Content-Length: 10\r\n\r\nab").as_bytes(),
                )?;
                std::thread::sleep(Duration::from_secs(5));
                return Ok(());
            }
            "/early-hints" => {
                w.write_all(
                    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
                )?;
                w.write_all(&reply(200, &base, b"after hints\n", head_only))?;
            }
            "/continue" => {
                let body = format!("got {} bytes\n", req.body.len());
                w.write_all(&reply(200, &base, body.as_bytes(), head_only))?;
            }
            "/resp-headers" => {
                let extra = format!(
                    "{base}X-Internal-Secret: s3cr3t\r\nx-internal-id: 42\r\nServer: backend-{name}\r\nLocation: http://example.com/next\r\nX-Keep: yes\r\n"
                );
                w.write_all(&reply(200, &extra, b"ok\n", head_only))?;
            }
            "/hop" => {
                let extra = format!(
                    "{base}Connection: X-Resp-Hop\r\nX-Resp-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Resp-Keep: yes\r\n"
                );
                w.write_all(&reply(200, &extra, b"ok\n", head_only))?;
            }
            "/conn-close" => {
                let extra = format!("{base}Connection: close\r\n");
                w.write_all(&reply(200, &extra, b"closing\n", head_only))?;
                close = true;
            }
            "/bad/garbage" => {
                w.write_all(b"this is not http at all\r\n\r\n")?;
                return Ok(());
            }
            "/bad/cl-te" => {
                w.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                )?;
                return Ok(());
            }
            "/bad/two-cl" => {
                w.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                )?;
                return Ok(());
            }
            "/bad/obs-fold" => {
                w.write_all(
                    b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n  b\r\nContent-Length: 2\r\n\r\nok",
                )?;
                return Ok(());
            }
            "/bad/space-colon" => {
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok")?;
                return Ok(());
            }
            "/bad/chunk" => {
                w.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nevil\r\n0\r\n\r\n")?;
                return Ok(());
            }
            "/bad/truncated" => {
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")?;
                return Ok(());
            }
            "/bad/empty" => return Ok(()),
            "/bad/extra" => {
                w.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nevil!\n",
                )?;
                // Keep the connection open: a proxy that reuses it would read the second one.
            }
            p if p.starts_with("/status/") => {
                let status: u16 = p["/status/".len()..]
                    .parse()
                    .map_err(|_| bad("bad status"))?;
                if status < 200 || status == 204 || status == 304 {
                    w.write_all(
                        format!(
                            "HTTP/1.1 {status} {}\r\n{base}ETag: \"x\"\r\n\r\n",
                            reason(status)
                        )
                        .as_bytes(),
                    )?;
                } else {
                    let body = format!("status {status}\n");
                    w.write_all(&reply(status, &base, body.as_bytes(), head_only))?;
                }
            }
            _ => {
                let extra = format!("{base}X-Path: {}\r\n", req.target);
                w.write_all(&reply(
                    200,
                    &extra,
                    format!("{name}\n").as_bytes(),
                    head_only,
                ))?;
            }
        }
        if close {
            return Ok(());
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Other",
    }
}

/// A complete response with Content-Length (the body left out for HEAD).
fn reply(status: u16, extra_headers: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\n{extra_headers}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

fn split_target(target: &str) -> (String, HashMap<String, String>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let q = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    (path.to_string(), q)
}

/// A 127.0.0.1 address nothing listens on (bound once, then released).
pub fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// Whether `path` exists as a socket (for Unix-listener tests).
pub fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}
