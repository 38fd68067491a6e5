//! Listening sockets, bound on the main thread before workers start so that a port in use is a
//! startup error and `:0` resolves to one port that every worker shares via SO_REUSEPORT.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Socket, Type};

use crate::config::{ListenAddr, Listener};

/// Pending connections the kernel queues per socket; nginx and HAProxy default to similar.
const LISTEN_BACKLOG: i32 = 4096;

/// A bound socket for one worker, not yet registered with its runtime.
pub enum BoundSocket {
    Tcp(std::net::TcpListener),
    Unix(UnixListener),
}

impl BoundSocket {
    pub fn raw_fd(&self) -> RawFd {
        match self {
            BoundSocket::Tcp(l) => l.as_raw_fd(),
            BoundSocket::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// One listener bound once per worker: `sockets[worker]`, and the address it got (`:0`
/// resolved).
pub struct Bound {
    pub sockets: Vec<BoundSocket>,
    pub addr: ListenAddr,
}

/// Binds `listener` once per worker (TCP: SO_REUSEPORT sockets sharing one port; Unix: one
/// socket, one descriptor per worker).
pub fn bind(listener: &Listener, workers: usize) -> io::Result<Bound> {
    let ctx = |e: io::Error, what: &str| {
        io::Error::new(e.kind(), format!("listener {}: {what}: {e}", listener.name))
    };
    let mut sockets = Vec::with_capacity(workers);
    match &listener.addr {
        ListenAddr::Tcp(addr) => {
            let mut addr = *addr;
            for _ in 0..workers {
                let socket = bind_tcp(addr).map_err(|e| ctx(e, &format!("bind {addr}")))?;
                // The first bind resolves port 0; the rest join that port.
                addr = socket.local_addr()?;
                sockets.push(BoundSocket::Tcp(socket));
            }
            Ok(Bound {
                sockets,
                addr: ListenAddr::Tcp(addr),
            })
        }
        ListenAddr::Unix(path) => {
            // SO_REUSEPORT does not apply to Unix sockets: one socket, one dup per worker.
            remove_stale_socket(path).map_err(|e| ctx(e, "remove stale socket"))?;
            let first = UnixListener::bind(path)
                .map_err(|e| ctx(e, &format!("bind {}", path.display())))?;
            first.set_nonblocking(true)?;
            for _ in 0..workers {
                sockets.push(BoundSocket::Unix(first.try_clone()?));
            }
            Ok(Bound {
                sockets,
                addr: ListenAddr::Unix(path.clone()),
            })
        }
    }
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "path exists and is not a socket",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Completes accepts pending on a listening socket (they fail), so no accept is left in flight
/// in the kernel when a worker's runtime goes away: an io_uring accept dropped instead would
/// keep the socket open, and a dead socket in the SO_REUSEPORT group swallows connections.
pub fn stop_accepting(fd: RawFd) {
    // SAFETY: shutdown on a descriptor has no memory effects; the fd stays owned by its worker,
    // which closes it only after its accept loop has ended (after this call returns).
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}
