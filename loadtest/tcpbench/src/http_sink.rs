//! `http-sink LISTEN`: an HTTP/1.1 backend that reads every request body to the end and
//! answers `200 ok` on a kept-alive connection (upload-1mib). nginx's `return` answers before
//! the body has arrived, which makes a streaming proxy close the client connection instead.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

/// Longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";

pub fn serve(listen: &str) -> ! {
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
    let mut r = BufReader::with_capacity(256 * 1024, c);
    let mut line = String::new();
    loop {
        let (mut len, mut chunked, mut head) = (0u64, false, 0usize);
        loop {
            line.clear();
            let n = r.read_line(&mut line)?;
            if n == 0 {
                return Ok(()); // peer closed between requests
            }
            head += n;
            if head > MAX_HEAD {
                return Err(std::io::Error::other("head too long"));
            }
            if line == "\r\n" && head > 2 {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().map_err(std::io::Error::other)?;
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.to_ascii_lowercase().contains("chunked");
                }
            }
        }
        if chunked {
            drain_chunked(&mut r, &mut line)?;
        } else {
            std::io::copy(&mut (&mut r).take(len), &mut std::io::sink())?;
        }
        w.write_all(RESPONSE)?;
    }
}

fn drain_chunked(r: &mut impl BufRead, line: &mut String) -> std::io::Result<()> {
    loop {
        line.clear();
        r.read_line(line)?;
        let size_hex = line.trim().split(';').next().unwrap_or("");
        let size = u64::from_str_radix(size_hex, 16).map_err(std::io::Error::other)?;
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                line.clear();
                if r.read_line(line)? == 0 || line == "\r\n" {
                    return Ok(());
                }
            }
        }
        std::io::copy(&mut r.take(size + 2), &mut std::io::sink())?;
    }
}
