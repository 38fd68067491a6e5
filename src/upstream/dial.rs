//! The TCP part of a dial: the socket options the transport asks for (`local_address`,
//! `read_buffer` / `write_buffer` as SO_RCVBUF / SO_SNDBUF, set before connecting so the
//! window scale fits them), a hostname's addresses raced RFC 8305-style
//! (`dial_fallback_delay`, see `upstream::eyeballs`), and the forward proxy's handshake
//! (`upstream::forward`). TLS to the target and the PROXY header come after, in
//! `upstream::connect`.

use std::io;
use std::net::SocketAddr;

use crate::config::{Fallback, Transport};
use crate::net::stream::Sock;
use crate::upstream::eyeballs;
use crate::upstream::forward::{self, Through};
use crate::worker::ctx::WorkerCtx;

/// Opens a connection to TCP target `addr` (written as `host`, with `fallbacks` its other
/// addresses) of upstream `u`: through the forward proxy when there is one.
pub async fn open(
    ctx: &WorkerCtx,
    u: usize,
    tr: &Transport,
    host: &str,
    addr: SocketAddr,
    fallbacks: &[SocketAddr],
) -> io::Result<Sock> {
    let tcp = match &tr.forward_proxy {
        // The proxy resolves names: there is one address to dial, the proxy's.
        Some(fp) => connect(fp.addr, tr).await?,
        None if fallbacks.is_empty() => connect(addr, tr).await?,
        None => {
            let all: Vec<SocketAddr> = std::iter::once(addr)
                .chain(fallbacks.iter().copied())
                .collect();
            let order = eyeballs::order(&all);
            let (tcp, _) = match tr.fallback {
                Some(Fallback::Race(delay)) => {
                    eyeballs::race(&order, delay, |a| connect(a, tr)).await?
                }
                _ => eyeballs::one_by_one(&order, tr.dial_timeout, |a| connect(a, tr)).await?,
            };
            tcp
        }
    };
    tcp.set_nodelay(true)?;
    if let Some(every) = tr.keepalive_interval {
        tcp.set_tcp_keepalive(Some(every), Some(every), None)?;
    }
    match &tr.forward_proxy {
        None => Ok(Sock::Tcp(tcp)),
        Some(fp) => {
            let to = Through {
                host: crate::net::tls::host_of(host),
                port: addr.port(),
            };
            forward::open(ctx, u, fp, tcp, &to).await
        }
    }
}

/// One TCP connect to `to` with the transport's socket options.
async fn connect(to: SocketAddr, tr: &Transport) -> io::Result<monoio::net::TcpStream> {
    if tr.local_address.is_none() && tr.read_buffer.is_none() && tr.write_buffer.is_none() {
        return monoio::net::TcpStream::connect_addr(to).await;
    }
    connect_with_options(to, tr).await
}

/// Creates the socket, sets the options, binds `local_address`, then connects without
/// blocking; the runtime reports completion as writability.
async fn connect_with_options(
    to: SocketAddr,
    tr: &Transport,
) -> io::Result<monoio::net::TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_cloexec(true)?;
    if let Some(n) = tr.read_buffer {
        socket.set_recv_buffer_size(n)?;
    }
    if let Some(n) = tr.write_buffer {
        socket.set_send_buffer_size(n)?;
    }
    if let Some(ip) = tr.local_address {
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::from(to)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = monoio::net::TcpStream::from_std(std::net::TcpStream::from(socket))?;
    stream.writable(false).await?;
    // SAFETY: the descriptor belongs to `stream`, open for the whole call.
    let fd =
        unsafe { std::os::fd::BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&stream)) };
    match socket2::SockRef::from(&fd).take_error()? {
        Some(e) => Err(e),
        None => Ok(stream),
    }
}
