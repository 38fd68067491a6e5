//! The client side of a SOCKS5 CONNECT (RFC 1928), with no authentication or RFC 1929
//! username/password, for `forward_proxy_url: socks5://`. Hostnames go to the proxy as names
//! (ATYP 3), so the proxy resolves them, as curl's `socks5h://` and Go's proxy dialer do.
//!
//! Written here rather than taken from a crate: the SOCKS5 crates (tokio-socks, fast-socks5,
//! async-socks5, socks5-proto) all drive tokio's `AsyncRead`/`AsyncWrite`, which monoio's
//! owned-buffer sockets do not implement, and the client handshake is a few dozen bytes. The
//! codec is pure functions; `handshake` only moves their bytes.

use std::io;
use std::net::IpAddr;

use monoio::io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt};

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0x00;
const USER_PASS: u8 = 0x02;
const NO_ACCEPTABLE: u8 = 0xff;
const CONNECT: u8 = 0x01;
const ATYP_V4: u8 = 0x01;
const ATYP_NAME: u8 = 0x03;
const ATYP_V6: u8 = 0x04;
/// RFC 1929's sub-negotiation version.
const AUTH_VERSION: u8 = 0x01;

/// Where the proxy is asked to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest<'a> {
    Ip(IpAddr, u16),
    /// Resolved by the proxy.
    Name(&'a str, u16),
}

impl<'a> Dest<'a> {
    /// A target's host as written (an IP literal or a name) and its port.
    pub fn of(host: &'a str, port: u16) -> Dest<'a> {
        match host.parse() {
            Ok(ip) => Dest::Ip(ip, port),
            Err(_) => Dest::Name(host, port),
        }
    }
}

/// The greeting: the methods offered (username/password only when there are credentials).
pub fn greeting(with_credentials: bool) -> Vec<u8> {
    if with_credentials {
        vec![VERSION, 2, NO_AUTH, USER_PASS]
    } else {
        vec![VERSION, 1, NO_AUTH]
    }
}

/// The method the proxy chose: `Ok(true)` when it wants username/password.
pub fn parse_choice(reply: [u8; 2], with_credentials: bool) -> io::Result<bool> {
    match reply {
        [VERSION, NO_AUTH] => Ok(false),
        [VERSION, USER_PASS] if with_credentials => Ok(true),
        [VERSION, USER_PASS] => Err(refused(
            "SOCKS5 proxy wants a user name and password: add them to forward_proxy_url",
        )),
        [VERSION, NO_ACCEPTABLE] => Err(refused(
            "SOCKS5 proxy accepts none of the offered authentication methods",
        )),
        [VERSION, m] => Err(refused(&format!(
            "SOCKS5 proxy chose authentication method {m:#04x}, which was not offered"
        ))),
        [v, _] => Err(malformed(&format!("version {v} in its method choice"))),
    }
}

/// RFC 1929's request (validation keeps both fields within 1..=255 bytes).
pub fn auth_request(user: &str, password: &str) -> io::Result<Vec<u8>> {
    let (u, p) = (user.as_bytes(), password.as_bytes());
    if u.is_empty() || u.len() > 255 || p.is_empty() || p.len() > 255 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "SOCKS5 user and password must be 1 to 255 bytes each",
        ));
    }
    let mut out = Vec::with_capacity(3 + u.len() + p.len());
    out.extend_from_slice(&[AUTH_VERSION, u.len() as u8]);
    out.extend_from_slice(u);
    out.push(p.len() as u8);
    out.extend_from_slice(p);
    Ok(out)
}

/// RFC 1929's answer: status 0 is success.
pub fn parse_auth_reply(reply: [u8; 2]) -> io::Result<()> {
    match reply {
        [AUTH_VERSION, 0] => Ok(()),
        [AUTH_VERSION, _] => Err(refused(
            "SOCKS5 proxy refused the user name and password of forward_proxy_url",
        )),
        [v, _] => Err(malformed(&format!(
            "version {v} in its authentication answer"
        ))),
    }
}

/// The CONNECT request for `dest`.
pub fn connect_request(dest: &Dest<'_>) -> io::Result<Vec<u8>> {
    let mut out = vec![VERSION, CONNECT, 0];
    let port = match dest {
        Dest::Ip(IpAddr::V4(ip), port) => {
            out.push(ATYP_V4);
            out.extend_from_slice(&ip.octets());
            port
        }
        Dest::Ip(IpAddr::V6(ip), port) => {
            out.push(ATYP_V6);
            out.extend_from_slice(&ip.octets());
            port
        }
        Dest::Name(name, port) => {
            if name.is_empty() || name.len() > 255 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a SOCKS5 host name must be 1 to 255 bytes",
                ));
            }
            out.push(ATYP_NAME);
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            port
        }
    };
    out.extend_from_slice(&port.to_be_bytes());
    Ok(out)
}

/// How much of a CONNECT reply is known from its first five bytes (VER REP RSV ATYP and the
/// first address byte): the reply's whole length, or why it failed.
pub fn reply_len(first: [u8; 5]) -> io::Result<usize> {
    let [ver, rep, _rsv, atyp, b0] = first;
    if ver != VERSION {
        return Err(malformed(&format!("version {ver} in its CONNECT reply")));
    }
    if rep != 0 {
        return Err(refused(&format!(
            "SOCKS5 proxy could not connect: {}",
            reply_reason(rep)
        )));
    }
    // 4 head bytes + address + 2 port bytes.
    match atyp {
        ATYP_V4 => Ok(4 + 4 + 2),
        ATYP_V6 => Ok(4 + 16 + 2),
        ATYP_NAME => Ok(4 + 1 + b0 as usize + 2),
        other => Err(malformed(&format!(
            "address type {other} in its CONNECT reply"
        ))),
    }
}

/// RFC 1928 §6's reply codes.
fn reply_reason(rep: u8) -> &'static str {
    match rep {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown reply code",
    }
}

fn refused(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, why.to_string())
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("SOCKS5 proxy sent a malformed answer: {what}"),
    )
}

/// Runs the client handshake on `s`, connected to the proxy: greeting, optional
/// username/password, CONNECT to `dest`. On success `s` carries the target's bytes.
pub async fn handshake<S>(
    s: &mut S,
    dest: &Dest<'_>,
    credentials: Option<&(String, String)>,
) -> io::Result<()>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    send(s, greeting(credentials.is_some())).await?;
    let wants_auth = parse_choice(read_n::<_, 2>(s).await?, credentials.is_some())?;
    if let (true, Some((user, password))) = (wants_auth, credentials) {
        send(s, auth_request(user, password)?).await?;
        parse_auth_reply(read_n::<_, 2>(s).await?)?;
    }
    send(s, connect_request(dest)?).await?;
    let first = read_n::<_, 5>(s).await?;
    let rest = reply_len(first)? - first.len();
    let (res, _) = s.read_exact(vec![0u8; rest]).await;
    res.map(|_| ()).map_err(eof)
}

async fn send<S: AsyncWriteRent>(s: &mut S, bytes: Vec<u8>) -> io::Result<()> {
    s.write_all(bytes).await.0.map(|_| ())
}

async fn read_n<S: AsyncReadRent, const N: usize>(s: &mut S) -> io::Result<[u8; N]> {
    let (res, buf) = s.read_exact(vec![0u8; N]).await;
    res.map_err(eof)?;
    let mut out = [0u8; N];
    out.copy_from_slice(&buf);
    Ok(out)
}

fn eof(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(e.kind(), "SOCKS5 proxy closed the connection mid-handshake")
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_greeting_offers_user_pass_only_with_credentials() {
        assert_eq!(greeting(false), [5, 1, 0]);
        assert_eq!(greeting(true), [5, 2, 0, 2]);
    }

    #[test]
    fn the_method_choice_is_read_against_what_was_offered() {
        for (reply, creds, want) in [
            ([5, 0], false, Ok(false)),
            ([5, 0], true, Ok(false)),
            ([5, 2], true, Ok(true)),
            ([5, 2], false, Err("add them to forward_proxy_url")),
            ([5, 0xff], true, Err("none of the offered")),
            ([5, 1], true, Err("which was not offered")),
            ([4, 0], false, Err("malformed answer: version 4")),
        ] {
            match (parse_choice(reply, creds), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{reply:?}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{reply:?}: {e}"),
                (got, w) => panic!("{reply:?}: {got:?} vs {w:?}"),
            }
        }
    }

    #[test]
    fn username_password_is_encoded_as_rfc_1929_says() {
        assert_eq!(
            auth_request("bob", "pw").unwrap(),
            [1, 3, b'b', b'o', b'b', 2, b'p', b'w']
        );
        assert!(auth_request("", "pw").is_err());
        assert!(auth_request("bob", &"x".repeat(256)).is_err());
        assert!(parse_auth_reply([1, 0]).is_ok());
        let e = parse_auth_reply([1, 1]).unwrap_err();
        assert!(e.to_string().contains("refused the user name"), "{e}");
        assert!(parse_auth_reply([5, 0]).is_err());
    }

    #[test]
    fn connect_requests_send_names_as_names_and_addresses_as_addresses() {
        for (dest, want) in [
            (
                Dest::of("10.0.0.1", 443),
                vec![5, 1, 0, 1, 10, 0, 0, 1, 0x01, 0xbb],
            ),
            (
                Dest::of("::1", 80),
                [&[5u8, 1, 0, 4][..], &[0; 15], &[1, 0, 80]].concat(),
            ),
            (
                Dest::of("api.test", 8443),
                [&[5u8, 1, 0, 3, 8][..], b"api.test", &[0x20, 0xfb]].concat(),
            ),
        ] {
            assert_eq!(connect_request(&dest).unwrap(), want, "{dest:?}");
        }
        assert!(connect_request(&Dest::Name(&"a".repeat(256), 1)).is_err());
    }

    #[test]
    fn connect_replies_give_their_length_or_the_reason_for_failure() {
        for (first, want) in [
            ([5, 0, 0, 1, 127], Ok(10)),
            ([5, 0, 0, 4, 0], Ok(22)),
            ([5, 0, 0, 3, 9], Ok(16)),
            ([5, 5, 0, 1, 0], Err("connection refused")),
            ([5, 2, 0, 1, 0], Err("not allowed by ruleset")),
            ([5, 0, 0, 9, 0], Err("address type 9")),
            ([1, 0, 0, 1, 0], Err("version 1")),
        ] {
            match (reply_len(first), want) {
                (Ok(n), Ok(w)) => assert_eq!(n, w, "{first:?}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{first:?}: {e}"),
                (got, w) => panic!("{first:?}: {got:?} vs {w:?}"),
            }
        }
    }
}
