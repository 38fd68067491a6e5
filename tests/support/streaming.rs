//! Backends for the streaming tests: a bulk HTTP server (sink, source, server-sent events,
//! and a raw upgrade endpoint), and a WebSocket echo server. One thread per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Deterministic test payload, cheap to make: a fixed pseudo-random 1 MiB block whose first
/// eight bytes carry the block's index, so lost, repeated or reordered blocks change the hash.
pub struct Payload {
    block: Vec<u8>,
}

pub const BLOCK: usize = 1 << 20;

impl Payload {
    pub fn new() -> Payload {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let block = (0..BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Payload { block }
    }

    /// Calls `f` with consecutive pieces of the first `len` bytes.
    pub fn for_each(&mut self, len: u64, mut f: impl FnMut(&[u8])) {
        let mut left = len;
        let mut i = 0u64;
        while left > 0 {
            self.block[..8].copy_from_slice(&i.to_le_bytes());
            let n = left.min(BLOCK as u64) as usize;
            f(&self.block[..n]);
            left -= n as u64;
            i += 1;
        }
    }

    pub fn sha256(&mut self, len: u64) -> String {
        let mut h = Sha256::new();
        self.for_each(len, |b| h.update(b));
        hex(&h.finalize())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Timestamps of server-sent events as the backend wrote them.
pub type EventTimes = mpsc::Receiver<Instant>;

pub struct BulkServer {
    pub addr: SocketAddr,
    pub events: EventTimes,
}

impl BulkServer {
    /// `POST /sink` answers `<sha256 hex> <bytes>`; `GET /source/N` sends N payload bytes;
    /// `GET /sse` sends three events 300 ms apart (chunked, text/event-stream);
    /// an `Upgrade` request on `/raw` gets `101` and then an echo of every byte.
    pub fn start() -> BulkServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let tx = tx.clone();
                thread::spawn(move || {
                    let _ = serve(conn, tx);
                });
            }
        });
        BulkServer { addr, events }
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

/// The sha256 and length of a chunked body, or None if the client left before its end.
fn read_chunked(r: &mut impl BufRead) -> std::io::Result<Option<(String, u64)>> {
    let mut h = Sha256::new();
    let mut total = 0u64;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let size = line.trim_end().split(';').next().unwrap_or("");
        let size = u64::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            // Trailer section up to the empty line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 || t.trim_end().is_empty() {
                    return Ok(Some((hex(&h.finalize()), total)));
                }
            }
        }
        let mut data = vec![0u8; size as usize + 2];
        if r.read_exact(&mut data).is_err() {
            return Ok(None);
        }
        h.update(&data[..size as usize]);
        total += size;
    }
}

fn serve(conn: TcpStream, events: mpsc::Sender<Instant>) -> std::io::Result<()> {
    let mut w = conn.try_clone()?;
    let mut r = BufReader::with_capacity(256 * 1024, conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("").to_string(),
        );
        let mut length = 0u64;
        let mut chunked = false;
        let mut upgrade = false;
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap_or((h, ""));
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
            if name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.trim().eq_ignore_ascii_case("chunked");
            }
        }
        if method == "POST" && path == "/sink" && chunked {
            // Read the whole chunked body before answering, so no early answer races a 413.
            let Some((digest, length)) = read_chunked(&mut r)? else {
                return Ok(());
            };
            let body = format!("{digest} {length}");
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
        } else if method == "POST" && path == "/sink" {
            let mut h = Sha256::new();
            let mut left = length;
            let mut buf = vec![0u8; 256 * 1024];
            while left > 0 {
                let want = left.min(buf.len() as u64) as usize;
                let n = r.read(&mut buf[..want])?;
                if n == 0 {
                    return Ok(());
                }
                h.update(&buf[..n]);
                left -= n as u64;
            }
            let body = format!("{} {}", hex(&h.finalize()), length);
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
        } else if let Some(n) = path.strip_prefix("/source/") {
            let n: u64 = n.parse().unwrap_or(0);
            write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n")?;
            let mut p = Payload::new();
            let mut res = Ok(());
            p.for_each(n, |b| {
                if res.is_ok() {
                    res = w.write_all(b);
                }
            });
            res?;
        } else if path == "/sse" {
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            for i in 0..3 {
                let event = format!("data: {i}\n\n");
                write!(w, "{:x}\r\n{event}\r\n", event.len())?;
                w.flush()?;
                let _ = events.send(Instant::now());
                thread::sleep(std::time::Duration::from_millis(300));
            }
            w.write_all(b"0\r\n\r\n")?;
        } else if upgrade && path == "/raw" {
            w.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n",
            )?;
            let mut buf = [0u8; 4096];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    let _ = w.shutdown(std::net::Shutdown::Write);
                    return Ok(());
                }
                w.write_all(&buf[..n])?;
            }
        } else {
            w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
        }
    }
}

/// A WebSocket server that echoes every message, on its own port.
pub fn start_ws_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            thread::spawn(move || {
                let Ok(mut ws) = tungstenite::accept(conn) else {
                    return;
                };
                while let Ok(msg) = ws.read() {
                    if msg.is_close() {
                        break;
                    }
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).is_err() {
                        break;
                    }
                }
                let _ = ws.flush();
            });
        }
    });
    addr
}

/// A socket whose reads retry on EINTR: io_uring workers in the same process (the proxy under
/// test) can interrupt a test thread's blocking read.
pub struct Retry(pub TcpStream);

impl Read for Retry {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl Write for Retry {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Resident set size of this process, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A proxy in front of a fresh `BulkServer` (upstream `app`, `upstream_extra` under it).
pub fn bulk_proxy(driver: super::Driver, upstream_extra: &str) -> (super::Proxy, BulkServer) {
    let bulk = BulkServer::start();
    let yaml = super::one_upstream_yaml("$B", upstream_extra);
    let proxy = super::Proxy::start(driver, &yaml, &[("B", bulk.target())]);
    (proxy, bulk)
}

pub fn read_head(s: &mut Retry) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "connection closed inside a head"
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

pub fn connect(proxy: &super::Proxy) -> Retry {
    let s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    Retry(s)
}
