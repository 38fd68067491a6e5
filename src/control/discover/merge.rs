//! The pure decisions of discovery: which names a configuration asks to resolve, how resolved
//! addresses become targets merged with the static ones, and when to ask again.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::{defaults, Config, Split, Target, TargetAddr, TargetSource, Upstream};

/// After a failed lookup, ask again this soon at the latest (sooner when `refresh` is shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// One name to resolve.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Query {
    /// A `targets` hostname (`name` without the port).
    Host { name: String, port: u16 },
    /// `dynamic.a`.
    A { name: String, port: u16 },
    /// `dynamic.srv`.
    Srv { name: String },
}

impl Query {
    pub fn name(&self) -> &str {
        match self {
            Query::Host { name, .. } | Query::A { name, .. } | Query::Srv { name } => name,
        }
    }

    /// `a`, `srv`, or `host` (a static target's name).
    pub fn kind(&self) -> &'static str {
        match self {
            Query::Host { .. } => "host",
            Query::A { .. } => "a",
            Query::Srv { .. } => "srv",
        }
    }
}

/// One resolved address, with the SRV record's weight and priority when it came from one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Found {
    pub addr: SocketAddr,
    pub weight: u16,
    pub priority: Option<u16>,
}

impl Found {
    pub fn plain(addr: SocketAddr) -> Found {
        Found {
            addr,
            weight: 1,
            priority: None,
        }
    }
}

/// The last good answer of every query, by (upstream name, query).
pub type Discovered = BTreeMap<(String, Query), Vec<Found>>;

/// One query of one upstream, with how often to repeat it and whom to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub upstream: String,
    pub query: Query,
    pub refresh: Duration,
    /// Empty: the system's resolvers.
    pub resolvers: Vec<SocketAddr>,
}

/// The queries `config` asks for: its `dynamic` names and the hostnames among its targets.
pub fn jobs(config: &Config) -> Vec<Job> {
    let mut out: Vec<Job> = Vec::new();
    for u in &config.upstreams {
        let (refresh, resolvers) = match &u.dynamic {
            Some(d) => (d.refresh, d.resolvers.clone()),
            None => (defaults::DNS_REFRESH, Vec::new()),
        };
        let mut add = |query: Query| {
            if !out.iter().any(|j| j.upstream == u.name && j.query == query) {
                out.push(Job {
                    upstream: u.name.clone(),
                    query,
                    refresh,
                    resolvers: resolvers.clone(),
                });
            }
        };
        for t in &u.targets {
            if let Some(q) = host_query(t) {
                add(q);
            }
        }
        if let Some(d) = &u.dynamic {
            if let Some((name, port)) = &d.a {
                add(Query::A {
                    name: name.clone(),
                    port: *port,
                });
            }
            if let Some(name) = &d.srv {
                add(Query::Srv { name: name.clone() });
            }
        }
    }
    out
}

/// The query that re-resolves a static target written as a hostname. Addresses, and
/// `localhost` (the hosts file's, fixed), are not re-resolved.
fn host_query(t: &Target) -> Option<Query> {
    let TargetAddr::Tcp { host, addr } = &t.addr else {
        return None;
    };
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => host.as_str(),
    };
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() || bare.eq_ignore_ascii_case("localhost") {
        return None;
    }
    Some(Query::Host {
        name: name.to_string(),
        port: addr.port(),
    })
}

/// `base` with every upstream's discovered targets in: static hostnames become one target per
/// address (where they resolved), `dynamic` addresses follow the main targets (an address
/// already listed is not repeated), split targets stay last.
pub fn effective(base: &Config, found: &Discovered) -> Config {
    let mut config = base.clone();
    for u in &mut config.upstreams {
        *u = merge_upstream(u, found);
    }
    config
}

fn merge_upstream(u: &Upstream, found: &Discovered) -> Upstream {
    let split_at = u.split.map_or(usize::MAX, |s| s.start);
    let (mut main, mut side) = (Vec::new(), Vec::new());
    for (i, t) in u.targets.iter().enumerate() {
        let into = if i >= split_at { &mut side } else { &mut main };
        let addrs = host_query(t).and_then(|q| found.get(&(u.name.clone(), q)));
        match (addrs, &t.addr) {
            // With `dial_fallback_delay` the name stays one target that races its addresses.
            (Some(list), TargetAddr::Tcp { host, .. })
                if !list.is_empty() && u.transport.fallback.is_some() =>
            {
                into.push(Target {
                    addr: TargetAddr::Tcp {
                        host: host.clone(),
                        addr: list[0].addr,
                    },
                    source: TargetSource::Hostname,
                    fallbacks: list[1..].iter().map(|f| f.addr).collect(),
                    ..t.clone()
                });
            }
            (Some(list), TargetAddr::Tcp { host, .. }) if !list.is_empty() => {
                for f in list {
                    push_new(
                        into,
                        Target {
                            addr: TargetAddr::Tcp {
                                host: host.clone(),
                                addr: f.addr,
                            },
                            source: TargetSource::Hostname,
                            ..t.clone()
                        },
                    );
                }
            }
            _ => into.push(t.clone()),
        }
    }
    let queries = u.dynamic.iter().flat_map(|d| {
        let a = d.a.as_ref().map(|(name, port)| Query::A {
            name: name.clone(),
            port: *port,
        });
        let srv = d.srv.as_ref().map(|name| Query::Srv { name: name.clone() });
        a.into_iter().chain(srv)
    });
    for q in queries {
        for f in found.get(&(u.name.clone(), q)).into_iter().flatten() {
            if side.iter().any(|t: &Target| t.addr == tcp(f.addr)) {
                continue;
            }
            let port = f.addr.port();
            push_new(
                &mut main,
                Target {
                    addr: tcp(f.addr),
                    // Discovered addresses carry no scheme: the upstream's `transport.tls` says.
                    tls: u
                        .transport
                        .tls
                        .as_ref()
                        .is_some_and(|s| !s.except_ports.contains(&port)),
                    // Without a scheme, only `versions: ["2"]` makes a plaintext target h2c.
                    h2c: u.transport.h2_only()
                        && u.transport
                            .tls
                            .as_ref()
                            .is_none_or(|s| s.except_ports.contains(&port)),
                    weight: u32::from(f.weight.max(1)),
                    max_connections: None,
                    source: match f.priority {
                        Some(priority) => TargetSource::Srv { priority },
                        None => TargetSource::A,
                    },
                    fallbacks: Vec::new(),
                },
            );
        }
    }
    let split = u.split.map(|s| Split {
        start: main.len(),
        ..s
    });
    main.extend(side);
    Upstream {
        targets: main,
        split,
        ..u.clone()
    }
}

/// A discovered target is named by its address (logs, metrics and hashing tell them apart).
fn tcp(addr: SocketAddr) -> TargetAddr {
    TargetAddr::Tcp {
        host: addr.to_string(),
        addr,
    }
}

/// Adds `t` unless a target at the same address is there already (the first one wins).
fn push_new(into: &mut Vec<Target>, t: Target) {
    let addr = |t: &Target| match &t.addr {
        TargetAddr::Tcp { addr, .. } => Some(*addr),
        TargetAddr::Unix(_) => None,
    };
    if addr(&t).is_none() || !into.iter().any(|o| addr(o) == addr(&t)) {
        into.push(t);
    }
}

/// Whether two configurations have the same targets (what a swap would change).
pub fn same_targets(a: &Config, b: &Config) -> bool {
    let key = |t: &Target| {
        (
            t.addr.clone(),
            t.tls,
            t.weight,
            t.source,
            t.fallbacks.clone(),
        )
    };
    a.upstreams.len() == b.upstreams.len()
        && a.upstreams.iter().zip(&b.upstreams).all(|(x, y)| {
            x.split == y.split
                && x.targets.len() == y.targets.len()
                && x.targets
                    .iter()
                    .zip(&y.targets)
                    .all(|(s, t)| key(s) == key(t))
        })
}

/// When to ask again after a good answer: `refresh`, or sooner when the shortest record's TTL
/// is shorter, never sooner than the floor.
pub fn next_after_success(refresh: Duration, ttl: Duration) -> Duration {
    refresh.min(ttl).max(defaults::MIN_DNS_REFRESH)
}

/// When to ask again after a failure: soon, the last good set serving meanwhile.
pub fn next_after_failure(refresh: Duration) -> Duration {
    refresh
        .min(RETRY_AFTER_FAILURE)
        .max(defaults::MIN_DNS_REFRESH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    fn a(addr: &str) -> Found {
        Found::plain(addr.parse().unwrap())
    }

    fn srv(addr: &str, priority: u16, weight: u16) -> Found {
        Found {
            addr: addr.parse().unwrap(),
            weight,
            priority: Some(priority),
        }
    }

    fn hosts(c: &Config) -> Vec<String> {
        c.upstreams[0]
            .targets
            .iter()
            .map(|t| match &t.addr {
                TargetAddr::Tcp { host, addr } => format!("{host}={addr}"),
                TargetAddr::Unix(p) => p.display().to_string(),
            })
            .collect()
    }

    const DYN: &str = "dynamic:\n  a: { name: api.svc, port: 8080 }\n  srv: _api._tcp.svc\n  \
                       refresh: 7s\n  resolvers: [127.0.0.1:5353]";

    #[test]
    fn jobs_cover_dynamic_names_and_static_hostnames_but_not_addresses_or_localhost() {
        let text = with_upstream(DYN).replace(
            "[127.0.0.1:9001]",
            "[127.0.0.1:9001, \"localhost:9002\", \"http://example.invalid\"]",
        );
        // example.invalid resolves nowhere: validation needs an address for it meanwhile.
        let text = text.replace("http://example.invalid", "http://127.0.0.2");
        let mut c = ok(&text);
        c.upstreams[0].targets[2].addr = TargetAddr::Tcp {
            host: "backend.svc:8081".into(),
            addr: "127.0.0.2:8081".parse().unwrap(),
        };
        let got: Vec<(String, Query, u64)> = jobs(&c)
            .into_iter()
            .map(|j| (j.upstream, j.query, j.refresh.as_secs()))
            .collect();
        let want = vec![
            (
                "api".to_string(),
                Query::Host {
                    name: "backend.svc".into(),
                    port: 8081,
                },
                7,
            ),
            (
                "api".to_string(),
                Query::A {
                    name: "api.svc".into(),
                    port: 8080,
                },
                7,
            ),
            (
                "api".to_string(),
                Query::Srv {
                    name: "_api._tcp.svc".into(),
                },
                7,
            ),
        ];
        assert_eq!(got, want);
        assert_eq!(
            jobs(&c)[0].resolvers,
            vec!["127.0.0.1:5353".parse().unwrap()]
        );
    }

    #[test]
    fn discovered_addresses_follow_static_targets_without_repeating_one() {
        let c = ok(&with_upstream(DYN));
        let mut found = Discovered::new();
        let q = Query::A {
            name: "api.svc".into(),
            port: 8080,
        };
        found.insert(
            ("api".into(), q),
            vec![a("127.0.0.1:9001"), a("127.0.0.2:8080"), a("[::1]:8080")],
        );
        let q = Query::Srv {
            name: "_api._tcp.svc".into(),
        };
        found.insert(
            ("api".into(), q),
            vec![srv("127.0.0.3:7000", 10, 5), srv("127.0.0.2:8080", 20, 0)],
        );
        let e = effective(&c, &found);
        assert_eq!(
            hosts(&e),
            [
                "127.0.0.1:9001=127.0.0.1:9001",
                "127.0.0.2:8080=127.0.0.2:8080",
                "[::1]:8080=[::1]:8080",
                "127.0.0.3:7000=127.0.0.3:7000",
            ]
        );
        let t = &e.upstreams[0].targets;
        assert_eq!(t[0].source, TargetSource::Static);
        assert_eq!(t[1].source, TargetSource::A);
        assert_eq!(
            (t[3].source, t[3].weight),
            (TargetSource::Srv { priority: 10 }, 5)
        );
        // Nothing found yet: the static targets alone.
        assert_eq!(hosts(&effective(&c, &Discovered::new())).len(), 1);
    }

    #[test]
    fn a_static_hostname_becomes_one_target_per_address_and_split_targets_stay_last() {
        let text = with_upstream("split: { targets: [127.0.0.9:1], percent: 10 }")
            .replace("[127.0.0.1:9001]", "[127.0.0.1:9001, 127.0.0.1:9002]");
        let mut c = ok(&text);
        c.upstreams[0].targets[1].addr = TargetAddr::Tcp {
            host: "web.svc:9002".into(),
            addr: "127.0.0.1:9002".parse().unwrap(),
        };
        c.upstreams[0].targets[1].weight = 3;
        let mut found = Discovered::new();
        let q = Query::Host {
            name: "web.svc".into(),
            port: 9002,
        };
        found.insert(
            ("api".into(), q),
            vec![a("127.0.0.4:9002"), a("127.0.0.5:9002")],
        );
        let e = effective(&c, &found);
        assert_eq!(
            hosts(&e),
            [
                "127.0.0.1:9001=127.0.0.1:9001",
                "web.svc:9002=127.0.0.4:9002",
                "web.svc:9002=127.0.0.5:9002",
                "127.0.0.9:1=127.0.0.9:1",
            ]
        );
        let u = &e.upstreams[0];
        assert_eq!(u.split.map(|s| s.start), Some(3));
        assert!(u.targets[1..3]
            .iter()
            .all(|t| t.weight == 3 && t.source == TargetSource::Hostname));
        assert!(same_targets(&e, &effective(&c, &found)));
        assert!(!same_targets(&e, &c));
    }

    #[test]
    fn with_dial_fallback_delay_a_static_hostname_stays_one_target_holding_every_address() {
        let mut c = ok(&with_upstream("transport: { dial_fallback_delay: 300ms }"));
        c.upstreams[0].targets[0].addr = TargetAddr::Tcp {
            host: "web.svc:9001".into(),
            addr: "127.0.0.1:9001".parse().unwrap(),
        };
        let q = Query::Host {
            name: "web.svc".into(),
            port: 9001,
        };
        let mut found = Discovered::new();
        let both = vec![a("127.0.0.4:9001"), a("127.0.0.5:9001")];
        found.insert(("api".into(), q.clone()), both);
        let e = effective(&c, &found);
        assert_eq!(hosts(&e), ["web.svc:9001=127.0.0.4:9001"]);
        let t = &e.upstreams[0].targets[0];
        assert_eq!(t.fallbacks, ["127.0.0.5:9001".parse().unwrap()]);
        assert_eq!(t.source, TargetSource::Hostname);
        // A changed second address is a change to swap in.
        found.insert(
            ("api".into(), q),
            vec![a("127.0.0.4:9001"), a("127.0.0.6:9001")],
        );
        assert!(!same_targets(&e, &effective(&c, &found)));
    }

    #[test]
    fn discovered_targets_use_tls_when_the_upstream_has_a_tls_block() {
        let c = ok(&with_upstream(&format!(
            "{DYN}\ntransport:\n  tls: {{ except_ports: [8081] }}"
        )));
        let mut found = Discovered::new();
        let q = Query::A {
            name: "api.svc".into(),
            port: 8080,
        };
        found.insert(
            ("api".into(), q),
            vec![a("127.0.0.2:8080"), a("127.0.0.2:8081")],
        );
        let e = effective(&c, &found);
        let tls: Vec<bool> = e.upstreams[0].targets.iter().map(|t| t.tls).collect();
        assert_eq!(tls, [true, true, false]);
    }

    #[test]
    fn refresh_follows_a_shorter_ttl_down_to_the_floor_and_failures_retry_sooner() {
        let s = Duration::from_secs;
        let cases = [
            (s(30), s(300), s(30)),
            (s(30), s(10), s(10)),
            (s(30), s(0), defaults::MIN_DNS_REFRESH),
            (s(2), s(0), s(1)),
        ];
        for (refresh, ttl, want) in cases {
            assert_eq!(
                next_after_success(refresh, ttl),
                want,
                "{refresh:?} {ttl:?}"
            );
        }
        assert_eq!(next_after_failure(s(30)), RETRY_AFTER_FAILURE);
        assert_eq!(next_after_failure(s(2)), s(2));
    }
}
