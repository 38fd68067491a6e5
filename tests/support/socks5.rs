//! A small SOCKS5 proxy (RFC 1928 CONNECT, no authentication or RFC 1929 username/password):
//! it records what each CONNECT asked for (`name:port` for a domain name, `ip:port` for an
//! address), resolves names itself (here: `.test` names from a table, so no DNS is needed)
//! and relays bytes both ways.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

pub struct Socks5Proxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone, Default)]
pub struct Options {
    /// Require this user and password (method 2); `None` offers no authentication.
    pub credentials: Option<(String, String)>,
    /// Names the proxy resolves (`name` -> address).
    pub names: HashMap<String, IpAddr>,
}

impl Socks5Proxy {
    pub fn start(options: Options) -> Socks5Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let (log, options) = (log.clone(), options.clone());
                std::thread::spawn(move || {
                    if let Some(upstream) = handshake(&mut &conn, &options, &log) {
                        super::connect_proxy::relay(conn, upstream);
                    }
                });
            }
        });
        Socks5Proxy { addr, seen }
    }

    /// What each CONNECT asked for, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn read_n(s: &mut impl Read, n: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

fn handshake(s: &mut &TcpStream, options: &Options, log: &Mutex<Vec<String>>) -> Option<TcpStream> {
    let head = read_n(s, 2)?;
    if head[0] != 5 {
        return None;
    }
    let methods = read_n(s, head[1] as usize)?;
    let want = if options.credentials.is_some() { 2 } else { 0 };
    if !methods.contains(&want) {
        let _ = s.write_all(&[5, 0xff]);
        return None;
    }
    s.write_all(&[5, want]).ok()?;
    if let Some((user, password)) = &options.credentials {
        let v = read_n(s, 2)?;
        let u = read_n(s, v[1] as usize)?;
        let plen = read_n(s, 1)?;
        let p = read_n(s, plen[0] as usize)?;
        let ok = v[0] == 1 && u == user.as_bytes() && p == password.as_bytes();
        s.write_all(&[1, if ok { 0 } else { 1 }]).ok()?;
        if !ok {
            return None;
        }
    }
    let req = read_n(s, 4)?;
    if req[..3] != [5, 1, 0] {
        return None;
    }
    let (asked, ip) = match req[3] {
        1 => {
            let a = read_n(s, 4)?;
            let ip = IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
            (ip.to_string(), Some(ip))
        }
        4 => {
            let a: [u8; 16] = read_n(s, 16)?.try_into().ok()?;
            let ip = IpAddr::V6(Ipv6Addr::from(a));
            (format!("[{ip}]"), Some(ip))
        }
        3 => {
            let len = read_n(s, 1)?;
            let name = String::from_utf8(read_n(s, len[0] as usize)?).ok()?;
            let ip = options.names.get(&name).copied();
            (name, ip)
        }
        _ => return None,
    };
    let port = read_n(s, 2)?;
    let port = u16::from_be_bytes([port[0], port[1]]);
    log.lock().unwrap().push(format!("{asked}:{port}"));
    // Reply 4 (host unreachable) for a name it cannot resolve, 5 when the connect fails.
    let reply = |code: u8| [5, code, 0, 1, 0, 0, 0, 0, 0, 0];
    let Some(ip) = ip else {
        let _ = s.write_all(&reply(4));
        return None;
    };
    let Ok(upstream) = TcpStream::connect((ip, port)) else {
        let _ = s.write_all(&reply(5));
        return None;
    };
    s.write_all(&reply(0)).ok()?;
    Some(upstream)
}
