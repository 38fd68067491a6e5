//! The DNS queries behind dynamic upstreams, through hickory-resolver. Runs only on the
//! discovery thread's tokio runtime.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

use super::merge::{Found, Query};

/// One try at a name server: a resolver that does not answer by then is down (pods' resolvers
/// answer in milliseconds).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Tries per name server before a lookup fails.
const QUERY_ATTEMPTS: usize = 2;

/// Why a lookup failed, as the metrics label it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `timeout`, `servfail`, `nxdomain`, `no_records`, `refused` or `error`.
    pub reason: &'static str,
    pub message: String,
}

/// A resolver for `servers`, or the system's (`/etc/resolv.conf`, its `search` and `ndots`)
/// when there are none. hickory's cache is bypassed: each refresh asks again.
pub fn resolver(servers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let (config, mut opts) = if servers.is_empty() {
        let (config, opts) = hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| format!("/etc/resolv.conf: {e}"))?;
        (config, opts)
    } else {
        let mut config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
        for s in servers {
            let mut ns = NameServerConfig::udp_and_tcp(s.ip());
            for c in &mut ns.connections {
                c.port = s.port();
            }
            config.add_name_server(ns);
        }
        let mut opts = ResolverOpts::default();
        // Explicit resolvers are the whole truth: the hosts file would mask what they say.
        opts.use_hosts_file = ResolveHosts::Never;
        (config, opts)
    };
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = QUERY_ATTEMPTS;
    Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| e.to_string())
}

/// Resolves `query`: its addresses (sorted, so a reordered answer is no change) and how long
/// the shortest record may be kept.
pub async fn lookup(
    resolver: &TokioResolver,
    query: &Query,
) -> Result<(Vec<Found>, Duration), Failure> {
    resolver.clear_cache();
    let mut found = Vec::new();
    let valid_until = match query {
        Query::Host { name, port } | Query::A { name, port } => {
            let ips = resolver.lookup_ip(name.as_str()).await.map_err(failure)?;
            for ip in ips.iter() {
                found.push(Found::plain(SocketAddr::new(ip, *port)));
            }
            ips.valid_until()
        }
        Query::Srv { name } => {
            let srv = resolver.srv_lookup(name.as_str()).await.map_err(failure)?;
            let mut until = srv.valid_until();
            for record in srv.answers() {
                let RData::SRV(s) = &record.data else {
                    continue;
                };
                // Addresses the server sent along; else the target is looked up.
                let mut ips: Vec<IpAddr> = srv
                    .additionals()
                    .iter()
                    .filter(|r| r.name == s.target)
                    .filter_map(|r| r.data.ip_addr())
                    .collect();
                if ips.is_empty() {
                    let looked = resolver.lookup_ip(s.target.clone()).await;
                    match looked {
                        Ok(l) => {
                            until = until.min(l.valid_until());
                            ips.extend(l.iter());
                        }
                        // One target that does not resolve costs only its own addresses.
                        Err(e) => tracing::debug!(target = %s.target, "SRV target: {e}"),
                    }
                }
                for ip in ips {
                    found.push(Found {
                        addr: SocketAddr::new(ip, s.port),
                        weight: s.weight,
                        priority: Some(s.priority),
                    });
                }
            }
            if found.is_empty() {
                return Err(Failure {
                    reason: "no_records",
                    message: format!("no SRV target of {name} has an address"),
                });
            }
            until
        }
    };
    found.sort();
    found.dedup_by_key(|f| f.addr);
    Ok((found, valid_until.saturating_duration_since(Instant::now())))
}

fn failure(e: NetError) -> Failure {
    let reason = match &e {
        NetError::Timeout => "timeout",
        NetError::Dns(DnsError::NoRecordsFound(n)) if n.response_code == ResponseCode::NXDomain => {
            "nxdomain"
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => "no_records",
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => "servfail",
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => "refused",
        _ => "error",
    };
    Failure {
        reason,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::net::NoRecords;
    use hickory_resolver::proto::op::Query as DnsQuery;
    use hickory_resolver::proto::rr::{Name, RecordType};

    #[test]
    fn failures_are_labelled_by_what_the_server_said() {
        let none = |code| {
            let q = DnsQuery::query(Name::from_ascii("a.test.").unwrap(), RecordType::A);
            NetError::Dns(DnsError::NoRecordsFound(NoRecords::new(q, code)))
        };
        let cases = [
            (NetError::Timeout, "timeout"),
            (none(ResponseCode::NXDomain), "nxdomain"),
            (none(ResponseCode::NoError), "no_records"),
            (
                NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)),
                "servfail",
            ),
            (
                NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)),
                "refused",
            ),
            (NetError::Msg("connection refused".into()), "error"),
        ];
        for (e, want) in cases {
            assert_eq!(failure(e).reason, want);
        }
    }
}
