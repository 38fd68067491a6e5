//! Target selection must not allocate: a counting global allocator watches `Balancer::select`
//! for every policy, with and without a hash key, with split and passive health on.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ringway::upstream::balance::{shared_targets, Balancer, Tried};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts allocations.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn selection_allocates_nothing_for_any_policy() {
    for policy in [
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
    ] {
        let key = match policy {
            "query" | "header" => ", key: k",
            _ => "",
        };
        let yaml = format!(
            "listeners:\n  - listen: 127.0.0.1:0\n    routes: [{{ upstream: u }}]\n\
             upstreams:\n  u:\n    targets: [127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3]\n    \
             split: {{ targets: [127.0.0.1:4], percent: 20 }}\n    \
             lb: {{ policy: {policy}{key} }}\n    \
             health: {{ passive: {{ fail_duration: 10s, max_fails: 2 }} }}\n"
        );
        let config = ringway::config::Config::parse(&yaml, "t.yaml").unwrap();
        let shared = shared_targets(&config.upstreams).remove(0);
        let b = Balancer::new(&config.upstreams[0], &shared, 0, 1);
        let keys: [Option<&[u8]>; 2] = [None, Some(b"user-42")];
        // Warm up lazily initialised state (the process clock epoch).
        let _ = b.select(Tried::default(), None, |_| false);
        let before = ALLOCS.load(Ordering::Relaxed);
        for i in 0..1000 {
            let pick = b.select(Tried::default(), keys[i % 2], |_| false);
            assert!(pick.is_some());
        }
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        assert_eq!(
            allocs, 0,
            "{policy}: {allocs} allocations in 1000 selections"
        );
    }
}
