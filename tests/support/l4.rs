//! Layer-4 test servers and clients: a TCP backend with a few behaviours ([`Mode`]), and a
//! bulk-transfer helper that streams deterministic bytes one way while hashing the other.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// What the backend does with each connection.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Echoes every byte; after the client's FIN it sends `bye` and then its own FIN.
    Echo,
    /// Reads until EOF or error and records the bytes (and whether the end was a reset).
    Record,
    /// Sends `bytes` deterministic bytes (seed 2) then FIN, while reading and hashing all it
    /// receives; records the result.
    Blast { bytes: u64 },
    /// Reads until the first byte arrives, then closes with SO_LINGER 0 (a reset).
    ResetOnData,
}

/// How one backend connection ended.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub bytes: Vec<u8>,
    /// The read that ended it failed with ECONNRESET (instead of EOF).
    pub reset: bool,
    /// Blast mode: how many bytes arrived and their SHA-256 (`bytes` stays empty).
    pub len: u64,
    pub sha: [u8; 32],
}

pub struct L4Backend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl L4Backend {
    pub fn start(mode: Mode) -> L4Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = L4Backend {
            addr,
            accepted: Arc::default(),
            open: Arc::default(),
            received: Arc::default(),
        };
        let (accepted, open, received) = (
            backend.accepted.clone(),
            backend.open.clone(),
            backend.received.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                accepted.fetch_add(1, Ordering::SeqCst);
                open.fetch_add(1, Ordering::SeqCst);
                let (open, received) = (open.clone(), received.clone());
                std::thread::spawn(move || {
                    if let Some(r) = serve(conn, mode) {
                        received.lock().unwrap().push(r);
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        backend
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections not yet finished.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Waits for `n` finished connections' records (Record and Blast modes).
    pub fn wait_received(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let ok = super::wait_for(timeout, || self.received.lock().unwrap().len() >= n);
        let got = self.received.lock().unwrap().clone();
        assert!(
            ok,
            "expected {n} finished backend connections, got {}",
            got.len()
        );
        got
    }
}

fn serve(mut conn: TcpStream, mode: Mode) -> Option<Received> {
    match mode {
        Mode::Echo => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).is_err() {
                            return None;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return None,
                }
            }
            // The client's FIN arrived; the way back must still carry this.
            std::thread::sleep(Duration::from_millis(50));
            let _ = conn.write_all(b"bye");
            let _ = conn.shutdown(Shutdown::Write);
            None
        }
        Mode::Record => {
            let mut r = Received::default();
            let mut buf = [0u8; 16 * 1024];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => r.bytes.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        r.reset = e.kind() == io::ErrorKind::ConnectionReset;
                        break;
                    }
                }
            }
            Some(r)
        }
        Mode::Blast { bytes } => {
            let mut writer = conn.try_clone().unwrap();
            let sender = std::thread::spawn(move || {
                let sent = send_stream(&mut writer, bytes, 2);
                let _ = writer.shutdown(Shutdown::Write);
                sent
            });
            let (len, sha) = hash_until_eof(&mut conn).ok()?;
            sender.join().unwrap().ok()?;
            Some(Received {
                len,
                sha,
                ..Received::default()
            })
        }
        Mode::ResetOnData => {
            let mut buf = [0u8; 1];
            let _ = conn.read(&mut buf);
            reset_close(conn);
            None
        }
    }
}

/// Closes with SO_LINGER 0, so the peer gets RST instead of FIN.
pub fn reset_close(conn: TcpStream) {
    socket2::SockRef::from(&conn)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(conn);
}

/// Bytes of the repeated block [`send_stream`] is made of.
const BLOCK: usize = 1 << 20;

/// The deterministic stream for `seed`: a pseudo-random 1 MiB block, its first 8 bytes
/// replaced by the block's index, repeated.
fn block(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(BLOCK);
    while out.len() < BLOCK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Writes `bytes` of `seed`'s stream; returns their SHA-256.
pub fn send_stream(w: &mut impl Write, bytes: u64, seed: u64) -> io::Result<[u8; 32]> {
    let mut b = block(seed);
    let mut sha = Sha256::new();
    let mut left = bytes;
    let mut i = 0u64;
    while left > 0 {
        b[..8].copy_from_slice(&i.to_le_bytes());
        let n = left.min(BLOCK as u64) as usize;
        sha.update(&b[..n]);
        w.write_all(&b[..n])?;
        left -= n as u64;
        i += 1;
    }
    Ok(sha.finalize().into())
}

/// The SHA-256 that [`send_stream`] returns, without sending.
pub fn stream_sha(bytes: u64, seed: u64) -> [u8; 32] {
    send_stream(&mut io::sink(), bytes, seed).unwrap()
}

/// Reads to EOF; returns the length and SHA-256 of what arrived.
pub fn hash_until_eof(r: &mut impl Read) -> io::Result<(u64, [u8; 32])> {
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r?,
        };
        if n == 0 {
            return Ok((len, sha.finalize().into()));
        }
        sha.update(&buf[..n]);
        len += n as u64;
    }
}

/// Reads until EOF (`Ok`) or an error (`Err` with what arrived before it).
pub fn read_to_end_or_error(c: &mut TcpStream) -> Result<Vec<u8>, (io::ErrorKind, Vec<u8>)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((e.kind(), got)),
        }
    }
}

/// A client connection with a read timeout, so a test never hangs.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c
}
