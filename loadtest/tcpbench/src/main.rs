//! tcpbench: the load generator and backend of `loadtest/scenarios/tcp-bulk.sh`.
//!
//! ```text
//! tcpbench sink  LISTEN                    backend: per connection, reply one byte to the
//!                                          first read, then read and discard until EOF
//! tcpbench bulk  ADDR SECONDS CONNECTIONS  stream 256 KiB writes on each connection
//! tcpbench short ADDR SECONDS CONNECTIONS  connect, send 1 byte, read 1 byte, close; repeat
//! tcpbench ws-echo LISTEN                  WebSocket echo backend (see ws.rs)
//! tcpbench http-sink LISTEN                HTTP backend reading each body whole, answering "ok"
//! tcpbench ws-load ADDR SECONDS CONNECTIONS SIZE
//!                                          WebSocket ping-pong of SIZE-byte messages
//! ```
//!
//! `bulk` and `short` print one line: `bytes=N seconds=S conns=C errors=E`. Threads, blocking
//! sockets, std only: the tool is small, and on loopback one thread per connection keeps up.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod http_sink;
mod ws;

/// Bytes per write in `bulk`: large writes keep the client's own CPU cost low.
const WRITE_CHUNK: usize = 256 * 1024;
/// Sink read buffer.
const READ_CHUNK: usize = 256 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!(
            "usage: tcpbench sink LISTEN | bulk ADDR SECONDS CONNS | short ADDR SECONDS CONNS\n\
             \x20      | ws-echo LISTEN | ws-load ADDR SECONDS CONNS SIZE | http-sink LISTEN"
        );
        std::process::exit(2)
    };
    match args.first().map(String::as_str) {
        Some("sink") if args.len() == 2 => sink(&args[1]),
        Some("ws-echo") if args.len() == 2 => ws::echo_server(&args[1]),
        Some("http-sink") if args.len() == 2 => http_sink::serve(&args[1]),
        Some("ws-load") if args.len() == 5 => {
            let secs: f64 = args[2].parse().unwrap_or_else(|_| usage());
            let conns: usize = args[3].parse().unwrap_or_else(|_| usage());
            let size: usize = args[4].parse().unwrap_or_else(|_| usage());
            ws::load(&args[1], Duration::from_secs_f64(secs), conns, size);
        }
        Some(mode @ ("bulk" | "short")) if args.len() == 4 => {
            let secs: f64 = args[2].parse().unwrap_or_else(|_| usage());
            let conns: usize = args[3].parse().unwrap_or_else(|_| usage());
            load(
                mode == "bulk",
                &args[1],
                Duration::from_secs_f64(secs),
                conns,
            );
        }
        _ => usage(),
    }
}

fn sink(listen: &str) -> ! {
    let l = TcpListener::bind(listen).unwrap_or_else(|e| {
        eprintln!("tcpbench: bind {listen}: {e}");
        std::process::exit(1)
    });
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        std::thread::spawn(move || {
            let mut buf = vec![0u8; READ_CHUNK];
            let mut first = true;
            loop {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) if first => {
                        first = false;
                        if c.write_all(b"k").is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                }
            }
        });
    }
    unreachable!("incoming() never ends")
}

fn load(bulk: bool, addr: &str, secs: Duration, conns: usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (stop, total, errors, addr) = (
                stop.clone(),
                total.clone(),
                errors.clone(),
                addr.to_string(),
            );
            std::thread::spawn(move || {
                let n = if bulk {
                    bulk_one(&addr, &stop)
                } else {
                    short_loop(&addr, &stop, &errors)
                };
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(secs);
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in threads {
        let _ = t.join();
    }
    println!(
        "bytes={} seconds={elapsed:.3} conns={conns} errors={}",
        total.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    );
}

/// Streams until `stop`; returns the bytes written.
fn bulk_one(addr: &str, stop: &AtomicBool) -> u64 {
    let Ok(mut c) = TcpStream::connect(addr) else {
        return 0;
    };
    let buf = vec![0x5au8; WRITE_CHUNK];
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match c.write(&buf) {
            Ok(n) => sent += n as u64,
            Err(_) => break,
        }
    }
    let _ = c.shutdown(Shutdown::Write);
    sent
}

/// Short connections until `stop`; returns how many completed (in the `bytes` field).
fn short_loop(addr: &str, stop: &AtomicBool, errors: &AtomicU64) -> u64 {
    let mut done = 0u64;
    let mut b = [0u8; 1];
    while !stop.load(Ordering::Relaxed) {
        let ok = TcpStream::connect(addr).and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            c.write_all(b"x")?;
            c.read_exact(&mut b)
        });
        match ok {
            Ok(()) => done += 1,
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    done
}
