//! Connecting to a target: reserve a connection slot, dial it (TCP or Unix) under the dial
//! timeout, and run the TLS handshake for TLS targets.

use std::time::Duration;

use crate::config::{TargetAddr, Upstream};
use crate::error::{ErrorKind, ProxyError};
use crate::net::stream::Stream;
use crate::upstream::pool::UpConn;
use crate::worker::ctx::WorkerCtx;

/// Runs `f` under an optional timeout; `None` when it ran out.
async fn timed<T>(limit: Option<Duration>, f: impl std::future::Future<Output = T>) -> Option<T> {
    match limit {
        Some(d) => monoio::time::timeout(d, f).await.ok(),
        None => Some(f.await),
    }
}

pub async fn dial(
    ctx: &WorkerCtx,
    u: usize,
    t: usize,
    up: &Upstream,
) -> Result<UpConn, ProxyError> {
    let bal = &ctx.balancer(u);
    if !bal.try_reserve_conn(t) {
        return Err(ProxyError::upstream(ErrorKind::NoTarget, true));
    }
    // The reservation is released by UpConn's Drop, or here on failure.
    let release = || {
        bal.shared(t)
            .conns
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    };
    let connect = async {
        match &up.targets[t].addr {
            TargetAddr::Tcp { addr, .. } => {
                let s = monoio::net::TcpStream::connect_addr(*addr).await?;
                s.set_nodelay(true)?;
                Ok::<_, std::io::Error>(Stream::Tcp(s))
            }
            TargetAddr::Unix(p) => Ok(Stream::Unix(monoio::net::UnixStream::connect(p).await?)),
        }
    };
    let stream = match timed(up.transport.dial_timeout, connect).await {
        Some(Ok(stream)) => stream,
        Some(Err(e)) => {
            release();
            return Err(ProxyError::upstream(ErrorKind::Dial(e), true));
        }
        None => {
            release();
            return Err(ProxyError::upstream(ErrorKind::DialTimeout, true));
        }
    };
    let stream = match (up.targets[t].tls, stream) {
        (true, Stream::Tcp(tcp)) => match originate_tls(ctx, u, t, up, tcp).await {
            Ok(s) => s,
            Err(e) => {
                release();
                return Err(e);
            }
        },
        (_, stream) => stream,
    };
    Ok(UpConn::new(stream, bal.shared(t).clone()))
}

/// The TLS handshake toward a TLS target, verified (unless `insecure_skip_verify`) against
/// `server_name` or the target's host. Certificate problems become a 502 saying why.
async fn originate_tls(
    ctx: &WorkerCtx,
    u: usize,
    t: usize,
    up: &Upstream,
    tcp: monoio::net::TcpStream,
) -> Result<Stream, ProxyError> {
    let (Some(connector), Some(settings), TargetAddr::Tcp { host, .. }) =
        (ctx.upstream_tls(u), &up.transport.tls, &up.targets[t].addr)
    else {
        unreachable!("validation gives every TLS target its settings and a TCP address");
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    let name = crate::net::tls::server_name(settings, host)
        .map_err(|e| ProxyError::upstream(ErrorKind::UpstreamTls(e.message), true))?;
    let result = timed(settings.handshake_timeout, connector.connect(name, tcp)).await;
    if !matches!(result, Some(Ok(_))) {
        ctx.shared()
            .upstream_tls_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    match result {
        Some(Ok(tls)) => Ok(Stream::TlsClient(Box::new(tls), fd)),
        Some(Err(e)) => {
            let reason = crate::net::tls::failure_reason(&e.into());
            Err(ProxyError::upstream(ErrorKind::UpstreamTls(reason), true))
        }
        None => Err(ProxyError::upstream(
            ErrorKind::UpstreamTls("TLS handshake timed out".into()),
            true,
        )),
    }
}
