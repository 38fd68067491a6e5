//! A real DNS server for dynamic-upstream tests: dnsmasq on a free 127.0.0.1 port, answering
//! from a hosts file it re-reads on SIGHUP, with SRV records from `--srv-host`. Authoritative
//! for `.test` (unknown names there are NXDOMAIN) and asks no one else.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TempDir;

/// Where Debian puts it (`tests/support/install-peers.sh` installs it).
const DNSMASQ: &str = "/usr/sbin/dnsmasq";

pub struct Dnsmasq {
    child: Option<Child>,
    pub addr: SocketAddr,
    hosts: PathBuf,
    _dir: TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq answering from `hosts` (hosts-file lines) and `srv` records written as
    /// `--srv-host` values (`_svc._tcp.test,target.test,PORT,PRIORITY,WEIGHT`). Panics, naming
    /// the peer, when dnsmasq is not installed.
    pub fn start(hosts: &str, srv: &[String]) -> Dnsmasq {
        assert!(
            std::path::Path::new(DNSMASQ).exists(),
            "dnsmasq is not installed ({DNSMASQ} missing): run tests/support/install-peers.sh \
             (apt-get install dnsmasq)"
        );
        let dir = TempDir::new();
        let hosts_path = dir.write("hosts", hosts);
        // dnsmasq reads the file as `nobody` after dropping privileges.
        readable(dir.path());
        readable(&hosts_path);
        for _ in 0..10 {
            let port = free_port();
            let mut cmd = Command::new(DNSMASQ);
            cmd.arg("--keep-in-foreground")
                .arg("--conf-file=/dev/null")
                .arg(format!("--port={port}"))
                .arg("--listen-address=127.0.0.1")
                .arg("--bind-interfaces")
                .arg("--no-resolv")
                .arg("--no-hosts")
                .arg("--pid-file=")
                .arg("--local=/test/")
                .arg(format!("--addn-hosts={}", hosts_path.display()))
                .arg("--log-facility=-")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            for s in srv {
                cmd.arg(format!("--srv-host={s}"));
            }
            let mut child = cmd.spawn().expect("dnsmasq: spawn");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Dnsmasq {
                        child: Some(child),
                        addr,
                        hosts: hosts_path,
                        _dir: dir,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken meanwhile: another one
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start on a free port");
    }

    /// `ip:port`, as a `resolvers` entry.
    pub fn resolver(&self) -> String {
        self.addr.to_string()
    }

    /// Replaces the hosts file and makes dnsmasq re-read it (SIGHUP).
    pub fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        readable(&self.hosts);
        let pid = self.child.as_ref().expect("dnsmasq running").id();
        // SAFETY: kill(2) on our own child's pid, which `child` keeps from being reaped.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
        assert_eq!(
            rc,
            0,
            "SIGHUP to dnsmasq: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Stops the server: lookups fail from now on.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn readable(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if p.is_dir() { 0o755 } else { 0o644 };
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

/// A port free on 127.0.0.1 for both UDP and TCP right now.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A port free on every one of `ips` (for A records: one port, several addresses).
pub fn port_free_on(ips: &[&str]) -> u16 {
    loop {
        let first = TcpListener::bind((ips[0], 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        if ips[1..]
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
}
