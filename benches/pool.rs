//! Upstream connection pool cost per request: checking out the warmest idle connection and
//! checking it back in, as a worker does around every keep-alive exchange.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringway::upstream::pool::Pool;

mod common;
use common::{pool_round_trip, runtime, warm_pool, POOL_MAX_IDLE, POOL_MAX_IDLE_AGE};

fn bench_pool(c: &mut Criterion) {
    // Pooled streams register with the runtime's driver, so they are made and dropped in it.
    runtime().block_on(async {
        let mut g = c.benchmark_group("pool");
        g.throughput(Throughput::Elements(1));
        for idle in [1, POOL_MAX_IDLE] {
            let (pool, _peers) = warm_pool(idle);
            g.bench_function(format!("checkout_checkin_{idle}_idle"), |b| {
                b.iter(|| pool_round_trip(&pool))
            });
        }
        // A miss is what every request pays before dialing a new connection.
        let empty = Pool::new(std::iter::once(1));
        g.bench_function("checkout_miss", |b| {
            b.iter(|| empty.checkout(0, 0, POOL_MAX_IDLE_AGE).is_none())
        });
        g.finish();
    });
}

criterion_group!(benches, bench_pool);
criterion_main!(benches);
