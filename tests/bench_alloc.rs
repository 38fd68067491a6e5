//! The benches' measured paths must not allocate: a counting global allocator watches the very
//! operations `benches/` time (shared through `benches/common`), after one warm-up round.
//! Balancer selection has its own test in `select_alloc.rs`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringway::http1::parse::{parse_request, parse_response, HeaderIdx, Parse};

#[path = "../benches/common/mod.rs"]
mod common;
use common::{
    chunked_body, decode_chunked, pool_round_trip, request_heads, response_head, rewrite_heads,
    runtime, warm_pool, HeadRewrite, CHUNKED_PAYLOAD, LIMITS, POOL_MAX_IDLE, REWRITE_ROUTES,
};

struct Counting;

thread_local! {
    // Per thread, so tests running in parallel do not count each other's allocations.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts allocations.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ROUNDS: usize = 1000;

/// Allocations (and reallocations) `f` makes on this thread in `ROUNDS` calls after a warm-up.
fn allocations(mut f: impl FnMut()) -> usize {
    f();
    let before = ALLOCS.with(Cell::get);
    for _ in 0..ROUNDS {
        f();
    }
    ALLOCS.with(Cell::get) - before
}

#[test]
fn request_head_parsing_allocates_nothing() {
    let mut headers: Vec<HeaderIdx> = Vec::new();
    for (name, head) in request_heads() {
        let n = allocations(|| {
            assert!(matches!(
                parse_request(&head, &LIMITS, &mut headers),
                Parse::Complete(_)
            ));
        });
        assert_eq!(n, 0, "{name}: {n} allocations in {ROUNDS} parses");
    }
}

#[test]
fn response_head_parsing_allocates_nothing() {
    let mut headers: Vec<HeaderIdx> = Vec::new();
    let head = response_head();
    let n = allocations(|| {
        assert!(matches!(
            parse_response(&head, false, &LIMITS, &mut headers),
            Parse::Complete(_)
        ));
    });
    assert_eq!(n, 0, "{n} allocations in {ROUNDS} parses");
}

#[test]
fn request_head_rewrite_allocates_nothing() {
    // REWRITE_ROUTES leaves out a value-changing header `replace`: regex's replace_all
    // returns an owned String for it, one allocation per replaced value.
    for (head_name, head) in rewrite_heads() {
        let mut rw = HeadRewrite::new(head);
        for (route, (route_name, expect)) in REWRITE_ROUTES.iter().enumerate() {
            let n = allocations(|| {
                rw.run(route);
            });
            let out = String::from_utf8_lossy(&rw.out);
            assert!(out.contains(expect), "{route_name} wrote:\n{out}");
            assert_eq!(
                n, 0,
                "{head_name}/{route_name}: {n} allocations in {ROUNDS} rewrites"
            );
        }
    }
}

#[test]
fn chunked_decoding_allocates_nothing() {
    let body = chunked_body();
    let n = allocations(|| assert_eq!(decode_chunked(&body), CHUNKED_PAYLOAD));
    assert_eq!(n, 0, "{n} allocations in {ROUNDS} decodes");
}

#[test]
fn pool_checkout_and_checkin_allocate_nothing() {
    runtime().block_on(async {
        for idle in [1, POOL_MAX_IDLE] {
            let (pool, _peers) = warm_pool(idle);
            let n = allocations(|| pool_round_trip(&pool));
            assert_eq!(n, 0, "{idle} idle: {n} allocations in {ROUNDS} round trips");
            assert_eq!(pool.idle_count(0, 0), idle);
        }
    });
}

#[test]
fn the_counting_allocator_sees_allocations() {
    // Guards the other tests against passing only because nothing is counted.
    let n = allocations(|| drop(std::hint::black_box(vec![0u8; 64])));
    assert_eq!(n, ROUNDS);
}
