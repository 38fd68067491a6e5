//! The request bytes a hashing balancer policy keys on, found without allocating.

use std::net::IpAddr;

use crate::config::Policy;

use crate::http1::forward::Client;
use crate::http1::parse::{HeaderIdx, RequestHead};

/// X-Forwarded-For hops client_ip_hash looks at (nearest first): a bounded stack array keeps
/// selection allocation-free; a longer chain is read from its nearest hops.
pub(crate) const MAX_XFF_HOPS: usize = 16;

/// Where a request's hash key lives: spans into the request buffer stay valid across retries
/// (the head is kept while the body streams), addresses are copied onto the stack.
#[derive(Clone, Copy)]
pub(crate) enum LbKey {
    None,
    Span(usize, usize),
    Ip([u8; 16], usize),
}

impl LbKey {
    pub(crate) fn get<'a>(&'a self, buf: &'a [u8]) -> Option<&'a [u8]> {
        match self {
            LbKey::None => None,
            LbKey::Span(a, b) => Some(&buf[*a..*b]),
            LbKey::Ip(bytes, len) => Some(&bytes[..*len]),
        }
    }

    pub(crate) fn ip(ip: IpAddr) -> LbKey {
        let mut bytes = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => {
                bytes[..4].copy_from_slice(&v4.octets());
                LbKey::Ip(bytes, 4)
            }
            IpAddr::V6(v6) => {
                bytes.copy_from_slice(&v6.octets());
                LbKey::Ip(bytes, 16)
            }
        }
    }

    /// The key the policy hashes on; `None` (random) when the request does not carry it.
    pub(crate) fn find(
        policy: Policy,
        name: &str,
        trusted: &[ipnet::IpNet],
        client: &Client,
        buf: &[u8],
        head: &RequestHead,
        headers: &[HeaderIdx],
    ) -> LbKey {
        let span = |s: &crate::http1::parse::Span| LbKey::Span(s.start as usize, s.end as usize);
        fn fields<'a>(
            headers: &'a [HeaderIdx],
            buf: &'a [u8],
            n: &'a str,
        ) -> impl Iterator<Item = &'a HeaderIdx> + 'a {
            headers
                .iter()
                .filter(move |h| h.name.get(buf).eq_ignore_ascii_case(n.as_bytes()))
        }
        let named = |n: &'static str| fields(headers, buf, n);
        match policy {
            Policy::IpHash => client.peer.map_or(LbKey::None, |p| LbKey::ip(p.ip())),
            Policy::ClientIpHash => match client.peer {
                Some(p) if client.trusted => {
                    client_ip_behind(trusted, named("x-forwarded-for").map(|h| h.value.get(buf)))
                        .map_or(LbKey::ip(p.ip()), LbKey::ip)
                }
                Some(p) => LbKey::ip(p.ip()),
                None => LbKey::None,
            },
            Policy::UriHash => span(&head.target),
            Policy::Header => fields(headers, buf, name)
                .next()
                .map_or(LbKey::None, |h| span(&h.value)),
            Policy::Query => head.query.map_or(LbKey::None, |q| {
                pair_in(buf, q.start as usize, q.end as usize, b'&', name.as_bytes())
                    .map_or(LbKey::None, |(a, b)| LbKey::Span(a, b))
            }),
            Policy::Cookie => named("cookie")
                .find_map(|h| {
                    pair_in(
                        buf,
                        h.value.start as usize,
                        h.value.end as usize,
                        b';',
                        name.as_bytes(),
                    )
                })
                .map_or(LbKey::None, |(a, b)| LbKey::Span(a, b)),
            _ => LbKey::None,
        }
    }
}

/// The client behind trusted proxies: X-Forwarded-For read right to left, the first hop that
/// is not a trusted proxy (or the leftmost when all are trusted).
pub(crate) fn client_ip_behind<'a>(
    trusted: &[ipnet::IpNet],
    values: impl Iterator<Item = &'a [u8]>,
) -> Option<IpAddr> {
    let mut last = None;
    // Later fields continue the list; walk hops from the nearest one back.
    let mut hops: [Option<IpAddr>; MAX_XFF_HOPS] = [None; MAX_XFF_HOPS];
    let mut n = 0;
    for v in values {
        for hop in v.split(|&b| b == b',') {
            let text = std::str::from_utf8(hop).unwrap_or("").trim();
            let ip = text.parse::<IpAddr>().ok();
            if n < MAX_XFF_HOPS {
                hops[n] = ip;
                n += 1;
            } else {
                hops.copy_within(1.., 0);
                hops[MAX_XFF_HOPS - 1] = ip;
            }
        }
    }
    for hop in hops[..n].iter().rev() {
        let ip = (*hop)?;
        last = Some(ip);
        if !trusted.iter().any(|net| net.contains(&ip)) {
            return Some(ip);
        }
    }
    last
}

/// The value of `name` in a `sep`-separated list of `name=value` pairs in `buf[start..end]`,
/// as indices into `buf`.
pub(crate) fn pair_in(
    buf: &[u8],
    start: usize,
    end: usize,
    sep: u8,
    name: &[u8],
) -> Option<(usize, usize)> {
    let mut at = start;
    while at <= end {
        let stop = buf[at..end]
            .iter()
            .position(|&b| b == sep)
            .map_or(end, |p| at + p);
        let mut a = at;
        while a < stop && buf[a] == b' ' {
            a += 1;
        }
        if let Some(eq) = buf[a..stop].iter().position(|&b| b == b'=') {
            if &buf[a..a + eq] == name {
                let mut b = stop;
                while b > a + eq + 1 && buf[b - 1] == b' ' {
                    b -= 1;
                }
                return Some((a + eq + 1, b));
            }
        }
        at = stop + 1;
    }
    None
}
