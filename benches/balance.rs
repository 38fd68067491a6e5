//! Target selection cost per policy: one `Balancer::select` over 8 targets (3 for the split
//! run), passive health on, as a worker does it for every request.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringway::upstream::balance::{shared_targets, Balancer, Tried};

const POLICIES: [&str; 13] = [
    "random",
    "random_choose",
    "first",
    "round_robin",
    "weighted_round_robin",
    "least_conn",
    "ip_hash",
    "client_ip_hash",
    "uri_hash",
    "query",
    "header",
    "cookie",
    "p2c_ewma",
];

fn balancer(policy: &str, extra: &str) -> Balancer {
    let key = match policy {
        "query" | "header" => ", key: k",
        _ => "",
    };
    let targets: Vec<String> = (1..=8).map(|p| format!("127.0.0.1:{p}")).collect();
    let yaml = format!(
        "listeners:\n  - listen: 127.0.0.1:0\n    routes: [{{ upstream: u }}]\n\
         upstreams:\n  u:\n    targets: [{}]\n    lb: {{ policy: {policy}{key} }}\n    \
         health: {{ passive: {{ fail_duration: 10s }} }}\n{extra}",
        targets.join(", ")
    );
    let config = ringway::config::Config::parse(&yaml, "bench.yaml").expect("bench config");
    let shared = shared_targets(&config.upstreams).remove(0);
    Balancer::new(&config.upstreams[0], &shared, 0, 1)
}

fn bench_select(c: &mut Criterion) {
    let mut g = c.benchmark_group("select");
    g.throughput(Throughput::Elements(1));
    for policy in POLICIES {
        let b = balancer(policy, "");
        let key: Option<&[u8]> = match policy {
            "cookie" => None,
            _ => Some(b"/api/v1/items?page=2&user=12345"),
        };
        g.bench_function(policy, |bench| {
            bench.iter(|| black_box(b.select(Tried::default(), black_box(key), |_| false)))
        });
    }
    let b = balancer(
        "round_robin",
        "    split: { targets: [127.0.0.1:9], percent: 10 }\n",
    );
    g.bench_function("round_robin+split", |bench| {
        bench.iter(|| black_box(b.select(Tried::default(), None, |_| false)))
    });
    g.finish();
}

criterion_group!(benches, bench_select);
criterion_main!(benches);
