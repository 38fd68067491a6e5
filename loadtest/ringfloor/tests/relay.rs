//! ringfloor relays keep-alive requests in every mode: a real backend and client on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Every mode the harness measures (run.sh's RINGFLOOR_MODE).
const MODES: &[&str] = &[
    "plain",
    "tuned",
    "tuned-upmulti",
    "plain-taskrun",
    "plain+acceptmulti",
    "plain+recvmulti",
    "plain+upmulti",
    "plain+fixed",
    "plain+ringfd",
    "plain+pollfirst",
];

/// A keep-alive backend: answers every request head with "hello N\n" (N counts per
/// connection), Content-Length framed, until the client closes.
fn backend() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let s = s.unwrap();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                for n in 1.. {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        assert!(
                            !line.to_ascii_lowercase().starts_with("connection:"),
                            "the Connection header reached the backend"
                        );
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let body = format!("hello {n}\n");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if w.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

struct Relay(Child, u16);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn relay(mode: &str, backend: u16) -> Relay {
    // A free port: bind, read it, release it (ringfloor binds it again at once).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_ringfloor"))
        .args([
            format!("127.0.0.1:{port}"),
            format!("127.0.0.1:{backend}"),
            mode.to_string(),
        ])
        .spawn()
        .unwrap();
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{mode}: not listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Relay(child, port)
}

/// One response: head up to the blank line, then Content-Length bytes of body.
fn read_response(r: &mut BufReader<TcpStream>) -> String {
    let mut len = 0;
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "closed mid-response");
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

#[test]
fn every_mode_relays_keep_alive_requests_over_one_upstream_connection() {
    let b = backend();
    for mode in MODES {
        let r = relay(mode, b);
        for _client in 0..2 {
            let s = TcpStream::connect(("127.0.0.1", r.1)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut w = s.try_clone().unwrap();
            let mut rd = BufReader::new(s);
            let mut seen = Vec::new();
            for _ in 0..3 {
                w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                seen.push(read_response(&mut rd));
            }
            // Three answers from one backend connection, in order.
            let n: Vec<u32> = seen
                .iter()
                .map(|b| b.trim().trim_start_matches("hello ").parse().unwrap())
                .collect();
            assert!(
                n[1] == n[0] + 1 && n[2] == n[1] + 1,
                "{mode}: answers {seen:?}"
            );
        }
    }
}

#[test]
fn connection_close_closes_the_client_and_not_the_upstream() {
    let b = backend();
    for mode in MODES {
        let r = relay(mode, b);
        let mut last = 0;
        for _ in 0..3 {
            let mut s = TcpStream::connect(("127.0.0.1", r.1)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut all = String::new();
            s.read_to_string(&mut all).unwrap(); // ends only if the relay closes
            let n: u32 = all
                .rsplit("\r\n\r\n")
                .next()
                .unwrap()
                .trim()
                .trim_start_matches("hello ")
                .parse()
                .unwrap();
            // The upstream is pooled and reused, except where a multishot upstream receive
            // is armed (upmulti): that one is closed with its client.
            let pooled = !matches!(*mode, "tuned" | "plain+upmulti");
            let want = if pooled { last + 1 } else { 1 };
            assert_eq!(n, want, "{mode}: {all:?}");
            last = n;
        }
    }
}
