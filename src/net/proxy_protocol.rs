//! The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): headers we send first
//! on upstream connections, and headers a trusted front load balancer sends us first.
//!
//! Only what a TCP proxy needs: v1 `TCP4`/`TCP6`/`UNKNOWN`, v2 `PROXY`/`LOCAL` over
//! `TCP over IPv4`/`TCP over IPv6`/`UNSPEC`. v2 TLVs are skipped on input and never sent.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::net::stream::Stream;

/// The whole header must arrive within this; a front balancer sends it with the first segment,
/// so a slow header is a stray client or a scanner, not a busy balancer.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// v1's longest line ("PROXY TCP6" with two full IPv6 addresses and ports, CRLF included), §2.1.
pub const V1_MAX_LEN: usize = 107;
/// v2 headers longer than this are refused: real ones carry a few small TLVs (AWS, Azure,
/// GCP add tens of bytes), and we must buffer the whole header before using it.
pub const V2_MAX_LEN: usize = 4096;
/// v2's fixed part: signature, version/command, family, length.
const V2_FIXED: usize = 16;
/// v2's twelve-byte signature, §2.2.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";

/// v2 version (high nibble, 2) with the PROXY (1) or LOCAL (0) command.
const V2_PROXY: u8 = 0x21;
const V2_LOCAL: u8 = 0x20;
/// v2 address family (high nibble) and transport (low nibble).
const V2_UNSPEC: u8 = 0x00;
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;
/// Address block lengths for TCP over IPv4 and IPv6.
const V2_LEN_TCP4: usize = 12;
const V2_LEN_TCP6: usize = 36;

/// Which header opens each upstream connection.
pub use crate::config::ProxyProtocol as Version;

/// Appends the header for a connection from `source` to `dest` (both `None` when unknown, e.g.
/// a Unix-socket client), byte for byte as HAProxy writes it. Mixed families are sent as IPv6
/// with the IPv4 side mapped (`::ffff:a.b.c.d`), as HAProxy does.
pub fn write_header(
    version: Version,
    source: Option<SocketAddr>,
    dest: Option<SocketAddr>,
    out: &mut Vec<u8>,
) {
    let pair = source.zip(dest).map(|(s, d)| same_family(s, d));
    match version {
        Version::Off => {}
        Version::V1 => match pair {
            Some((SocketAddr::V4(s), SocketAddr::V4(d))) => {
                let line = format!(
                    "PROXY TCP4 {} {} {} {}\r\n",
                    s.ip(),
                    d.ip(),
                    s.port(),
                    d.port()
                );
                out.extend_from_slice(line.as_bytes());
            }
            Some((s, d)) => {
                let line = format!(
                    "PROXY TCP6 {} {} {} {}\r\n",
                    s.ip(),
                    d.ip(),
                    s.port(),
                    d.port()
                );
                out.extend_from_slice(line.as_bytes());
            }
            None => out.extend_from_slice(b"PROXY UNKNOWN\r\n"),
        },
        Version::V2 => {
            out.extend_from_slice(&V2_SIGNATURE);
            match pair {
                Some((SocketAddr::V4(s), SocketAddr::V4(d))) => {
                    out.extend_from_slice(&[V2_PROXY, V2_TCP4]);
                    out.extend_from_slice(&(V2_LEN_TCP4 as u16).to_be_bytes());
                    out.extend_from_slice(&s.ip().octets());
                    out.extend_from_slice(&d.ip().octets());
                    out.extend_from_slice(&s.port().to_be_bytes());
                    out.extend_from_slice(&d.port().to_be_bytes());
                }
                Some((s, d)) => {
                    out.extend_from_slice(&[V2_PROXY, V2_TCP6]);
                    out.extend_from_slice(&(V2_LEN_TCP6 as u16).to_be_bytes());
                    out.extend_from_slice(&v6(s.ip()).octets());
                    out.extend_from_slice(&v6(d.ip()).octets());
                    out.extend_from_slice(&s.port().to_be_bytes());
                    out.extend_from_slice(&d.port().to_be_bytes());
                }
                // No addresses to carry: LOCAL, so the receiver uses the connection's own.
                None => out.extend_from_slice(&[V2_LOCAL, V2_UNSPEC, 0, 0]),
            }
        }
    }
}

/// Both addresses in one family: IPv4 mapped into IPv6 when the other side is IPv6.
fn same_family(s: SocketAddr, d: SocketAddr) -> (SocketAddr, SocketAddr) {
    match (s, d) {
        (SocketAddr::V4(_), SocketAddr::V6(_)) | (SocketAddr::V6(_), SocketAddr::V4(_)) => (
            SocketAddr::new(IpAddr::V6(v6(s.ip())), s.port()),
            SocketAddr::new(IpAddr::V6(v6(d.ip())), d.port()),
        ),
        _ => (s, d),
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// A received header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes the header took at the start of the stream.
    pub len: usize,
    /// The carried client and destination addresses; `None` for v1 `UNKNOWN`, v2 `LOCAL` and
    /// v2 `UNSPEC` (health checks of the front balancer): the connection's own addresses apply.
    pub addrs: Option<(SocketAddr, SocketAddr)>,
}

/// What the bytes received so far hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    Complete(Header),
    /// A valid start; more bytes are needed.
    Partial,
    Invalid(&'static str),
}

/// Parses a header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parse {
    let starts = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    if starts(V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Parse::Partial;
        }
        return parse_v1(buf);
    }
    if starts(&V2_SIGNATURE) {
        return parse_v2(buf);
    }
    Parse::Invalid("no PROXY protocol signature")
}

fn parse_v1(buf: &[u8]) -> Parse {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    // The first CR or LF decides, so that a line is judged the same however it is split
    // across reads (an UNKNOWN line holding a bare LF was refused in pieces, accepted whole).
    let Some(cr) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        if buf.len() >= V1_MAX_LEN {
            return Parse::Invalid("v1 line without CRLF within 107 bytes");
        }
        return Parse::Partial;
    };
    if window[cr] == b'\n' {
        return Parse::Invalid("v1 line with a bare LF");
    }
    match window.get(cr + 1) {
        None => return Parse::Partial,
        Some(b'\n') => {}
        Some(_) => return Parse::Invalid("v1 line with a bare CR"),
    }
    let len = cr + 2;
    let Ok(line) = std::str::from_utf8(&window[V1_PREFIX.len()..cr]) else {
        return Parse::Invalid("v1 line is not ASCII");
    };
    // §2.1: UNKNOWN may be followed by anything up to the CRLF; the receiver ignores it.
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Parse::Complete(Header { len, addrs: None });
    }
    let parts: Vec<&str> = line.split(' ').collect();
    let [proto, src, dst, sport, dport] = parts[..] else {
        return Parse::Invalid("v1 line needs protocol, two addresses and two ports");
    };
    let ips = match proto {
        "TCP4" => src
            .parse::<std::net::Ipv4Addr>()
            .ok()
            .zip(dst.parse::<std::net::Ipv4Addr>().ok())
            .map(|(s, d)| (IpAddr::V4(s), IpAddr::V4(d))),
        "TCP6" => src
            .parse::<Ipv6Addr>()
            .ok()
            .zip(dst.parse::<Ipv6Addr>().ok())
            .map(|(s, d)| (IpAddr::V6(s), IpAddr::V6(d))),
        _ => return Parse::Invalid("v1 protocol is not TCP4, TCP6 or UNKNOWN"),
    };
    let Some((s, d)) = ips else {
        return Parse::Invalid("v1 address does not match its protocol");
    };
    let (Some(sp), Some(dp)) = (v1_port(sport), v1_port(dport)) else {
        return Parse::Invalid("v1 port is not a decimal 0-65535 without leading zeros");
    };
    Parse::Complete(Header {
        len,
        addrs: Some((SocketAddr::new(s, sp), SocketAddr::new(d, dp))),
    })
}

fn v1_port(s: &str) -> Option<u16> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let no_leading_zero = s == "0" || !s.starts_with('0');
    (digits && no_leading_zero)
        .then(|| s.parse().ok())
        .flatten()
}

fn parse_v2(buf: &[u8]) -> Parse {
    if buf.len() < V2_FIXED {
        return Parse::Partial;
    }
    let ver_cmd = buf[12];
    let fam = buf[13];
    let body = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = V2_FIXED + body;
    if ver_cmd >> 4 != 2 {
        return Parse::Invalid("v2 version is not 2");
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Parse::Invalid("v2 command is neither LOCAL nor PROXY"),
    };
    if len > V2_MAX_LEN {
        return Parse::Invalid("v2 header longer than we accept");
    }
    let need = match fam {
        V2_TCP4 => V2_LEN_TCP4,
        V2_TCP6 => V2_LEN_TCP6,
        // §2.2: with LOCAL the receiver must accept (and ignore) any family.
        _ if local => 0,
        V2_UNSPEC => 0,
        _ => return Parse::Invalid("v2 family is not TCP over IPv4 or IPv6"),
    };
    if body < need {
        return Parse::Invalid("v2 address block shorter than its family needs");
    }
    if buf.len() < len {
        return Parse::Partial;
    }
    if local || need == 0 {
        return Parse::Complete(Header { len, addrs: None });
    }
    let a = &buf[V2_FIXED..V2_FIXED + need];
    let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
    let addrs = if fam == V2_TCP4 {
        let ip = |i: usize| IpAddr::from([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        (
            SocketAddr::new(ip(0), port(8)),
            SocketAddr::new(ip(4), port(10)),
        )
    } else {
        let ip = |i: usize| {
            let mut o = [0u8; 16];
            o.copy_from_slice(&a[i..i + 16]);
            IpAddr::from(o)
        };
        (
            SocketAddr::new(ip(0), port(32)),
            SocketAddr::new(ip(16), port(34)),
        )
    };
    Parse::Complete(Header {
        len,
        addrs: Some(addrs),
    })
}

/// Why a connection that had to start with a PROXY header was closed.
#[derive(Debug)]
pub enum RefuseReason {
    Invalid(&'static str),
    TimedOut,
    /// The peer closed or failed before a whole header arrived.
    Io(std::io::Error),
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefuseReason::Invalid(why) => write!(f, "malformed PROXY header: {why}"),
            RefuseReason::TimedOut => {
                write!(f, "no PROXY header within {HEADER_TIMEOUT:?}")
            }
            RefuseReason::Io(e) => write!(f, "client closed before its PROXY header: {e}"),
        }
    }
}

/// Reads the header a trusted front balancer must send first on a `proxy_protocol: true`
/// listener. `None`: refused (untrusted peer, malformed, late; the caller closes);
/// `Some(None)`: accepted without addresses (LOCAL/UNKNOWN); otherwise the carried client and
/// destination. Bytes after the header are left in `buf`.
pub async fn accept(
    trusted: &[ipnet::IpNet],
    stream: &mut Stream,
    peer: Option<SocketAddr>,
    buf: &mut Vec<u8>,
) -> Option<Option<(SocketAddr, SocketAddr)>> {
    if !peer.is_some_and(|p| trusted.iter().any(|n| n.contains(&p.ip()))) {
        tracing::debug!(
            ?peer,
            "PROXY protocol listener: peer is not in trusted_proxies"
        );
        return None;
    }
    match read_header(stream, buf).await {
        Ok(h) => Some(h.addrs),
        Err(e) => {
            tracing::debug!(?peer, "{e}");
            None
        }
    }
}

/// Reads a trusted peer's header off a TCP connection without reading past it, so the TLS
/// handshake that follows finds its first byte where it expects it (PROXY protocol before TLS,
/// as AWS NLB or HAProxy's `send-proxy` send it). `None`: close the connection.
pub async fn accept_before_tls(
    trusted: &[ipnet::IpNet],
    tcp: &monoio::net::TcpStream,
    peer: Option<SocketAddr>,
) -> Option<Option<(SocketAddr, SocketAddr)>> {
    if !peer.is_some_and(|p| trusted.iter().any(|n| n.contains(&p.ip()))) {
        tracing::debug!(
            ?peer,
            "PROXY protocol listener: peer is not in trusted_proxies"
        );
        return None;
    }
    let result = match monoio::time::timeout(HEADER_TIMEOUT, peek_header(tcp)).await {
        Ok(r) => r,
        Err(_) => Err(RefuseReason::TimedOut),
    };
    match result {
        Ok(h) => Some(h.addrs),
        Err(e) => {
            tracing::debug!(?peer, "{e}");
            None
        }
    }
}

/// Peeks at the socket until a whole header is there, then consumes exactly its bytes.
async fn peek_header(tcp: &monoio::net::TcpStream) -> Result<Header, RefuseReason> {
    use std::os::fd::AsRawFd;
    let fd = tcp.as_raw_fd();
    let mut buf = vec![0u8; V2_MAX_LEN];
    let mut seen = 0;
    loop {
        tcp.readable(false).await.map_err(RefuseReason::Io)?;
        // SAFETY: recv writes at most `buf.len()` bytes into `buf`, which outlives the call.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let n = match n {
            0 => return Err(RefuseReason::Io(std::io::ErrorKind::UnexpectedEof.into())),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    continue;
                }
                return Err(RefuseReason::Io(e));
            }
            n => n as usize,
        };
        match parse(&buf[..n]) {
            Parse::Complete(h) => {
                // The bytes are queued already: one non-blocking read takes exactly them.
                // SAFETY: as above, at most `h.len` <= `buf.len()` bytes.
                let got =
                    unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), h.len, libc::MSG_DONTWAIT) };
                if got != h.len as isize {
                    return Err(RefuseReason::Io(std::io::Error::last_os_error()));
                }
                return Ok(h);
            }
            Parse::Invalid(why) => return Err(RefuseReason::Invalid(why)),
            // Readiness stays set while the partial header sits unread: wait for more bytes
            // instead of spinning on the same ones.
            Parse::Partial if n == seen => monoio::time::sleep(Duration::from_millis(2)).await,
            Parse::Partial => seen = n,
        }
    }
}

/// Reads a header from the start of `stream` into `buf` (which must be empty and have spare
/// capacity) within `HEADER_TIMEOUT`. On success the header is drained from `buf`; bytes the
/// peer sent after it stay in `buf` for the caller.
pub async fn read_header(stream: &mut Stream, buf: &mut Vec<u8>) -> Result<Header, RefuseReason> {
    debug_assert!(buf.is_empty());
    let deadline = monoio::time::Instant::now() + HEADER_TIMEOUT;
    if buf.capacity() < V2_MAX_LEN {
        buf.reserve_exact(V2_MAX_LEN);
    }
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Parse::Complete(h) => {
                    buf.drain(..h.len);
                    return Ok(h);
                }
                Parse::Invalid(why) => return Err(RefuseReason::Invalid(why)),
                Parse::Partial => {}
            }
        }
        debug_assert!(
            buf.len() < buf.capacity(),
            "a partial header fits V2_MAX_LEN"
        );
        let read = stream.read_more(std::mem::take(buf));
        let Ok((res, b)) = monoio::time::timeout_at(deadline, read).await else {
            return Err(RefuseReason::TimedOut);
        };
        *buf = b;
        match res {
            Ok(0) => return Err(RefuseReason::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(e) => return Err(RefuseReason::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: Version, s: &str, d: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(version, s.parse().ok(), d.parse().ok(), &mut out);
        out
    }

    #[test]
    fn a_v1_line_with_a_bare_lf_is_refused_whole_and_in_pieces() {
        // Found by fuzz/proxy_protocol: accepted whole (UNKNOWN ignores what follows), refused
        // when the CRLF had not arrived yet.
        let line = b"PROXY UNKNOWN x\ny\r\n";
        assert_eq!(parse(line), Parse::Invalid("v1 line with a bare LF"));
        assert_eq!(parse(&line[..16]), Parse::Invalid("v1 line with a bare LF"));
        assert_eq!(parse(&line[..15]), Parse::Partial);
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
            Parse::Invalid("v1 line with a bare LF")
        );
    }

    #[test]
    fn v1_tcp4_line_matches_the_specification_example() {
        let h = header(Version::V1, "192.168.0.1:56324", "192.168.0.11:443");
        assert_eq!(h, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    }

    #[test]
    fn v1_tcp6_line_uses_compressed_addresses() {
        let h = header(Version::V1, "[2001:db8::1]:1234", "[::1]:80");
        assert_eq!(h, b"PROXY TCP6 2001:db8::1 ::1 1234 80\r\n");
    }

    #[test]
    fn mixed_families_are_sent_as_ipv6_with_the_ipv4_side_mapped() {
        let h = header(Version::V1, "10.0.0.1:5", "[::1]:80");
        assert_eq!(h, b"PROXY TCP6 ::ffff:10.0.0.1 ::1 5 80\r\n");
    }

    #[test]
    fn unknown_addresses_become_v1_unknown_and_v2_local() {
        assert_eq!(header(Version::V1, "", ""), b"PROXY UNKNOWN\r\n");
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(header(Version::V2, "", ""), want);
    }

    #[test]
    fn v2_tcp4_header_is_laid_out_as_the_specification_says() {
        let h = header(Version::V2, "1.2.3.4:258", "5.6.7.8:772");
        let mut want = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a".to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0x01, 0x02, 0x03, 0x04]);
        assert_eq!(h, want);
    }

    #[test]
    fn v2_tcp6_header_is_laid_out_as_the_specification_says() {
        let h = header(Version::V2, "[2001:db8::1]:258", "[::2]:772");
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x21, 0x00, 0x24]);
        want.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        want.extend_from_slice(&[0; 11]);
        want.push(1);
        want.extend_from_slice(&[0; 15]);
        want.push(2);
        want.extend_from_slice(&[0x01, 0x02, 0x03, 0x04]);
        assert_eq!(h, want);
    }

    #[test]
    fn written_headers_parse_back_to_their_addresses() {
        for (s, d) in [
            ("192.168.0.1:56324", "192.168.0.11:443"),
            ("[2001:db8::1]:1", "[2001:db8::ff]:65535"),
        ] {
            for v in [Version::V1, Version::V2] {
                let h = header(v, s, d);
                let want = Header {
                    len: h.len(),
                    addrs: Some((s.parse().unwrap(), d.parse().unwrap())),
                };
                assert_eq!(parse(&h), Parse::Complete(want), "{v:?} {s} {d}");
                for cut in 0..h.len() {
                    assert_eq!(parse(&h[..cut]), Parse::Partial, "{v:?} cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn trailing_payload_is_not_part_of_the_header() {
        let mut h = header(Version::V1, "1.1.1.1:1", "2.2.2.2:2");
        let len = h.len();
        h.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert!(matches!(parse(&h), Parse::Complete(Header { len: l, .. }) if l == len));
    }

    #[test]
    fn v2_tlvs_are_skipped_and_local_and_unspec_carry_no_address() {
        let mut h = header(Version::V2, "1.2.3.4:1", "5.6.7.8:2");
        h[15] += 7;
        h.extend_from_slice(&[0x04, 0x00, 0x04, b'n', b'o', b'o', b'p']);
        assert!(matches!(
            parse(&h),
            Parse::Complete(Header {
                len: 35,
                addrs: Some(_)
            })
        ));
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x11, 0x00, 0x0c]);
        local.extend_from_slice(&[0; 12]);
        assert_eq!(
            parse(&local),
            Parse::Complete(Header {
                len: 28,
                addrs: None
            })
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN ffff::1 ::2 1 2\r\n"),
            Parse::Complete(Header {
                len: 31,
                addrs: None
            })
        );
    }

    #[test]
    fn malformed_headers_are_invalid() {
        let mut bad_version = header(Version::V2, "1.2.3.4:1", "5.6.7.8:2");
        bad_version[12] = 0x11;
        let mut bad_cmd = header(Version::V2, "1.2.3.4:1", "5.6.7.8:2");
        bad_cmd[12] = 0x22;
        let mut udp = header(Version::V2, "1.2.3.4:1", "5.6.7.8:2");
        udp[13] = 0x12;
        let mut short = header(Version::V2, "1.2.3.4:1", "5.6.7.8:2");
        short[15] = 4;
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let long_v1 = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("http", b"GET / HTTP/1.1\r\n".to_vec()),
            ("lowercase", b"proxy TCP4 1.1.1.1 2.2.2.2 1 2\r\n".to_vec()),
            ("tcp5", b"PROXY TCP5 1.1.1.1 2.2.2.2 1 2\r\n".to_vec()),
            ("v6 in tcp4", b"PROXY TCP4 ::1 ::2 1 2\r\n".to_vec()),
            ("missing port", b"PROXY TCP4 1.1.1.1 2.2.2.2 1\r\n".to_vec()),
            (
                "port range",
                b"PROXY TCP4 1.1.1.1 2.2.2.2 1 65536\r\n".to_vec(),
            ),
            (
                "leading zero",
                b"PROXY TCP4 1.1.1.1 2.2.2.2 01 2\r\n".to_vec(),
            ),
            (
                "double space",
                b"PROXY TCP4  1.1.1.1 2.2.2.2 1 2\r\n".to_vec(),
            ),
            ("bare lf", b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\n".to_vec()),
            ("no crlf", long_v1.into_bytes()),
            ("v2 version", bad_version),
            ("v2 command", bad_cmd),
            ("v2 udp", udp),
            ("v2 short block", short),
            ("v2 too long", huge),
        ];
        for (name, bytes) in cases {
            assert!(
                matches!(parse(&bytes), Parse::Invalid(_)),
                "{name}: {:?}",
                parse(&bytes)
            );
        }
    }
}
