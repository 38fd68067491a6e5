//! WebSocket echo backend and load generator for `loadtest/scenarios/websocket.sh`.
//!
//! Just enough of RFC 6455 for a proxy benchmark: the opening handshake (with a real
//! `Sec-WebSocket-Accept`, so strict proxies accept it), unfragmented binary frames, close.
//! The client sends one masked message per connection and waits for its echo (ping-pong), so
//! messages/s is bounded by round trips through the proxy and every message crosses it twice.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest request or response head we accept before calling the peer broken.
const MAX_HEAD: usize = 16 * 1024;
/// Largest message the echo server takes; the bench sends small ones.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// A proxy that stalls a message this long counts as an error, so a run always ends.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// `ws-echo LISTEN`: echoes every data frame; a plain GET (probe, health check) gets 200 "ok".
pub fn echo_server(listen: &str) -> ! {
    let l = TcpListener::bind(listen).unwrap_or_else(|e| {
        eprintln!("tcpbench: bind {listen}: {e}");
        std::process::exit(1)
    });
    for conn in l.incoming() {
        let Ok(c) = conn else { continue };
        std::thread::spawn(move || {
            let _ = c.set_nodelay(true);
            let _ = serve_one(c);
        });
    }
    unreachable!("incoming() never ends")
}

fn serve_one(c: TcpStream) -> std::io::Result<()> {
    let mut w = c.try_clone()?;
    let mut r = BufReader::new(c);
    loop {
        let head = read_head(&mut r)?;
        if head.is_empty() {
            return Ok(());
        }
        let Some(key) = header(&head, "sec-websocket-key") else {
            // Not an upgrade: answer and keep the connection (proxies pool it).
            w.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n",
            )?;
            continue;
        };
        let accept = base64(&sha1(format!("{key}{WS_GUID}").as_bytes()));
        write!(
            w,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )?;
        let mut payload = Vec::new();
        loop {
            let op = read_frame(&mut r, &mut payload)?;
            match op {
                OP_CLOSE => {
                    write_frame(&mut w, OP_CLOSE, &payload, None)?;
                    return Ok(());
                }
                OP_PING => write_frame(&mut w, OP_PONG, &payload, None)?,
                OP_PONG => {}
                _ => write_frame(&mut w, op, &payload, None)?,
            }
        }
    }
}

/// `ws-load ADDR SECONDS CONNECTIONS SIZE`: prints
/// `messages=N seconds=S conns=C errors=E p50_us=.. p90_us=.. p99_us=.. p999_us=..`.
pub fn load(addr: &str, secs: Duration, conns: usize, size: usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let rtts = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            let (stop, total, errors, rtts, addr) = (
                stop.clone(),
                total.clone(),
                errors.clone(),
                rtts.clone(),
                addr.to_string(),
            );
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                if client_one(&addr, size, i as u32, &stop, &mut mine).is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                total.fetch_add(mine.len() as u64, Ordering::Relaxed);
                rtts.lock().expect("no panics while held").extend(mine);
            })
        })
        .collect();
    std::thread::sleep(secs);
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in threads {
        let _ = t.join();
    }
    let mut rtts = std::mem::take(&mut *rtts.lock().expect("threads joined"));
    rtts.sort_unstable();
    let pct = |p: f64| -> String {
        if rtts.is_empty() {
            return "nan".into();
        }
        let i = ((p / 100.0) * rtts.len() as f64).ceil() as usize;
        format!("{:.1}", rtts[i.clamp(1, rtts.len()) - 1] as f64 / 1e3)
    };
    println!(
        "messages={} seconds={elapsed:.3} conns={conns} errors={} p50_us={} p90_us={} p99_us={} p999_us={}",
        total.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9)
    );
}

/// One connection: handshake, then ping-pong until `stop`. Pushes each round trip in ns.
fn client_one(
    addr: &str,
    size: usize,
    seed: u32,
    stop: &AtomicBool,
    rtts: &mut Vec<u64>,
) -> std::io::Result<()> {
    let c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    c.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut w = c.try_clone()?;
    let mut r = BufReader::new(c);
    // Unique per connection; the server only hashes it.
    let key = base64(&(seed as u128 * 0x9E37_79B9_7F4A_7C15).to_le_bytes());
    write!(
        w,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let head = read_head(&mut r)?;
    let want = base64(&sha1(format!("{key}{WS_GUID}").as_bytes()));
    if !head.starts_with("HTTP/1.1 101") || header(&head, "sec-websocket-accept") != Some(&want) {
        return Err(std::io::Error::other(format!(
            "no upgrade: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    let message = vec![0x42u8; size];
    let mask = seed.wrapping_mul(2_654_435_761).to_be_bytes();
    let mut frame = Vec::with_capacity(size + 14);
    encode_frame(&mut frame, OP_BINARY, &message, Some(mask));
    let mut echo = Vec::with_capacity(size);
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        w.write_all(&frame)?;
        let op = read_frame(&mut r, &mut echo)?;
        if op != OP_BINARY || echo.len() != size {
            return Err(std::io::Error::other("wrong echo"));
        }
        rtts.push(t.elapsed().as_nanos() as u64);
    }
    let mut close = Vec::new();
    encode_frame(&mut close, OP_CLOSE, &1000u16.to_be_bytes(), Some(mask));
    w.write_all(&close)?;
    let _ = read_frame(&mut r, &mut echo);
    Ok(())
}

/// Reads up to the blank line; "" on a clean EOF before any byte.
fn read_head(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut head = String::new();
    loop {
        let n = r.read_line(&mut head)?;
        if n == 0 {
            if head.is_empty() {
                return Ok(head);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if head.ends_with("\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(std::io::Error::other("head too long"));
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads one frame into `payload` (unmasked); returns its opcode.
fn read_frame(r: &mut impl Read, payload: &mut Vec<u8>) -> std::io::Result<u8> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h)?;
    let op = h[0] & 0x0F;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    if len > MAX_MESSAGE {
        return Err(std::io::Error::other("message too large"));
    }
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask)?;
    }
    payload.resize(len, 0);
    r.read_exact(payload)?;
    if masked {
        payload
            .iter_mut()
            .zip(mask.iter().cycle())
            .for_each(|(b, m)| *b ^= m);
    }
    Ok(op)
}

fn write_frame(
    w: &mut impl Write,
    op: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> std::io::Result<()> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    encode_frame(&mut f, op, payload, mask);
    w.write_all(&f)
}

fn encode_frame(f: &mut Vec<u8>, op: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    let m = if mask.is_some() { 0x80 } else { 0 };
    f.push(0x80 | op);
    match payload.len() {
        n @ 0..=125 => f.push(m | n as u8),
        n @ 126..=0xFFFF => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().zip(k.iter().cycle()).map(|(b, m)| b ^ m));
        }
        None => f.extend_from_slice(payload),
    }
}

/// SHA-1 (FIPS 180-4), only for the handshake's accept value.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&(data.len() as u64 * 8).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (wi, b) in w.iter_mut().zip(block.chunks_exact(4)) {
            *wi = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (hi, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hi = hi.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (o, v) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&v.to_be_bytes());
    }
    out
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matches_rfc6455_example() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let got = base64(&sha1(format!("{key}{WS_GUID}").as_bytes()));
        assert_eq!(got, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }
}
