//! A backend that answers every request with one fixed status (and `X-Backend: NAME`), on a
//! chosen or OS-picked 127.0.0.1 port, counting requests by path: for health and retry tests
//! that need targets to differ (one failing, one fine) or to come back on the same port.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct FixedBackend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    paths: Arc<Mutex<HashMap<String, usize>>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl FixedBackend {
    /// Listens on `bind` (`127.0.0.1:0` for any port) and answers `status` with body `NAME\n`.
    pub fn start(name: &str, status: u16, bind: SocketAddr) -> FixedBackend {
        let listener = TcpListener::bind(bind).expect("fixed backend: bind");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let paths = Arc::new(Mutex::new(HashMap::new()));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (stop, paths, conns, name) =
                (stop.clone(), paths.clone(), conns.clone(), name.to_string());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(false).unwrap();
                            conns.lock().unwrap().push(s.try_clone().unwrap());
                            let (paths, name) = (paths.clone(), name.clone());
                            std::thread::spawn(move || serve(s, &name, status, &paths));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        FixedBackend {
            addr,
            stop,
            paths,
            conns,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Requests received for `path` (without query).
    pub fn hits(&self, path: &str) -> usize {
        self.paths.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Requests received in total.
    pub fn requests(&self) -> usize {
        self.paths.lock().unwrap().values().sum()
    }
}

impl Drop for FixedBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn serve(s: TcpStream, name: &str, status: u16, paths: &Mutex<HashMap<String, usize>>) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let head_only = line.starts_with("HEAD ");
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                if n.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let path = target.split('?').next().unwrap_or("/").to_string();
        *paths.lock().unwrap().entry(path).or_default() += 1;
        let text = format!("{name}\n");
        let mut out = format!(
            "HTTP/1.1 {status} X\r\nX-Backend: {name}\r\nContent-Length: {}\r\n\r\n",
            text.len()
        );
        if !head_only {
            out.push_str(&text);
        }
        if w.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}
