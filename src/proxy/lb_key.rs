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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::parse::{parse_request, HeadLimits, Parse};
    use std::net::SocketAddr;

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 8192,
        max_uri_bytes: 4096,
        max_headers: 64,
    };

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// The key `policy` finds in `raw` from `peer`, as text (IP keys as the address).
    fn key(policy: Policy, name: &str, raw: &str, peer: &str, trusted: &[&str]) -> Option<String> {
        let buf = raw.as_bytes();
        let mut headers = Vec::new();
        let Parse::Complete(head) = parse_request(buf, &LIMITS, &mut headers) else {
            panic!("test request does not parse: {raw:?}");
        };
        let peer: SocketAddr = peer.parse().unwrap();
        let trusted = nets(trusted);
        let client = Client {
            peer: Some(peer),
            trusted: trusted.iter().any(|n| n.contains(&peer.ip())),
            ip_text: peer.ip().to_string(),
            scheme: "http",
            local: None,
        };
        let k = LbKey::find(policy, name, &trusted, &client, buf, &head, &headers);
        k.get(buf).map(|bytes| match k {
            LbKey::Ip(_, 4) => {
                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).unwrap()).to_string()
            }
            LbKey::Ip(..) => {
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap()).to_string()
            }
            _ => String::from_utf8(bytes.to_vec()).unwrap(),
        })
    }

    #[test]
    fn each_hashing_policy_keys_on_its_part_of_the_request() {
        let req = "GET /a/b?x=1&user=ann&y=2 HTTP/1.1\r\nHost: h\r\nX-Tenant: blue\r\n\
                   Cookie: a=1; lb=t2 ; c=3\r\nX-Forwarded-For: 198.51.100.7, 10.0.0.2\r\n\r\n";
        let table: &[(Policy, &str, &[&str], Option<&str>)] = &[
            (Policy::IpHash, "", &[], Some("10.0.0.9")),
            (Policy::UriHash, "", &[], Some("/a/b?x=1&user=ann&y=2")),
            (Policy::Header, "x-tenant", &[], Some("blue")),
            (Policy::Header, "x-missing", &[], None),
            (Policy::Query, "user", &[], Some("ann")),
            (Policy::Query, "use", &[], None),
            (Policy::Cookie, "lb", &[], Some("t2")),
            (Policy::Cookie, "zz", &[], None),
            // An untrusted peer's X-Forwarded-For is not believed.
            (Policy::ClientIpHash, "", &[], Some("10.0.0.9")),
            // Behind trusted proxies: the nearest hop that is not one of them.
            (
                Policy::ClientIpHash,
                "",
                &["10.0.0.0/8"],
                Some("198.51.100.7"),
            ),
            (Policy::RoundRobin, "", &[], None),
        ];
        for (policy, name, trusted, want) in table {
            let got = key(*policy, name, req, "10.0.0.9:5000", trusted);
            assert_eq!(
                got.as_deref(),
                *want,
                "{policy:?} {name:?} trusted {trusted:?}"
            );
        }
    }

    #[test]
    fn client_ip_behind_walks_forwarded_hops_from_the_nearest() {
        let table: &[(&[&str], &[&str], Option<&str>)] = &[
            (&["1.1.1.1"], &[], Some("1.1.1.1")),
            (&["1.1.1.1, 10.0.0.1"], &["10.0.0.0/8"], Some("1.1.1.1")),
            // Later header lines continue the list.
            (&["1.1.1.1", "2.2.2.2"], &[], Some("2.2.2.2")),
            // All trusted: the leftmost.
            (&["10.0.0.3, 10.0.0.1"], &["10.0.0.0/8"], Some("10.0.0.3")),
            // A hop that is not an address ends the walk: nothing behind it is believed.
            (&["1.1.1.1, junk, 10.0.0.1"], &["10.0.0.0/8"], None),
            (&[], &[], None),
        ];
        for (values, trusted, want) in table {
            let got = client_ip_behind(&nets(trusted), values.iter().map(|v| v.as_bytes()));
            assert_eq!(got.map(|ip| ip.to_string()).as_deref(), *want, "{values:?}");
        }
    }

    #[test]
    fn a_forwarded_chain_longer_than_the_stack_keeps_its_nearest_hops() {
        let mut hops: Vec<String> = (1..=MAX_XFF_HOPS + 4)
            .map(|i| format!("10.0.0.{i}"))
            .collect();
        hops[4] = "203.0.113.5".into();
        hops[MAX_XFF_HOPS + 2] = "203.0.113.9".into();
        let line = hops.join(", ");
        let got = client_ip_behind(&nets(&["10.0.0.0/8"]), std::iter::once(line.as_bytes()));
        assert_eq!(got, Some("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn pair_in_finds_a_name_in_a_separated_list_and_trims_spaces() {
        let table: &[(&str, u8, &str, Option<&str>)] = &[
            ("a=1&b=2", b'&', "b", Some("2")),
            ("a=1&b=2", b'&', "a", Some("1")),
            ("a=1&ab=2", b'&', "b", None),
            ("a=&b=2", b'&', "a", Some("")),
            (" x = 5 ; y=6", b';', "y", Some("6")),
            ("flag&b=2", b'&', "flag", None),
            ("", b'&', "a", None),
        ];
        for (text, sep, name, want) in table {
            let buf = text.as_bytes();
            let got = pair_in(buf, 0, buf.len(), *sep, name.as_bytes())
                .map(|(a, b)| std::str::from_utf8(&buf[a..b]).unwrap());
            assert_eq!(got, *want, "{text:?} {name:?}");
        }
    }
}
