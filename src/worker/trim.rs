//! Gives memory back to the system when a worker turns quiet. A burst of new connections
//! leaves pages the allocator keeps for reuse once their busy state is freed (0.6 KiB per
//! connection after 10,000 opened at a few thousand a second, most of what a parked connection
//! itself holds), and mimalloc purges them only as later allocations pass by; a worker whose
//! connections all idle makes none.

use std::rc::Rc;
use std::time::Duration;

use super::WorkerCore;

/// How often a worker looks at whether it is quiet: a worker is quiet when no request started
/// during one whole period.
pub const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Trims once each time the worker turns quiet (not again until it has been busy).
pub(super) async fn run(core: Rc<WorkerCore>) {
    let mut seen = core.buffers.taken();
    let mut trimmed = true;
    while !core.close_all.is_closed() {
        monoio::select! {
            _ = monoio::time::sleep(TRIM_EVERY) => {},
            _ = core.close_all.wait() => break,
        }
        let now = core.buffers.taken();
        if quiet(seen, now, trimmed) {
            core.buffers.release();
            collect();
            trimmed = true;
        } else if now != seen {
            trimmed = false;
        }
        seen = now;
    }
}

/// Whether to trim now: the worker was busy since the last trim, and not in the last period.
fn quiet(seen: u64, now: u64, trimmed: bool) -> bool {
    now == seen && !trimmed
}

/// Turns transparent huge pages off for this process (the `ringway` binary does this first).
/// mimalloc advises its arenas huge, and a 2 MiB huge page stays resident while any 4 KiB of
/// it is in use: 10,000 idle connections cost 1.7 KiB each with huge pages and 1.0 without.
pub fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// Frees the allocator's empty pages and returns unused memory to the system now.
fn collect() {
    // SAFETY: mi_collect only walks this thread's own heap and mimalloc's arenas; it is safe
    // to call at any time, whichever allocator the process uses (then it has nothing to do).
    unsafe { libmimalloc_sys::mi_collect(true) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_trims_once_after_a_busy_period_ends() {
        // (taken at the last look, taken now, trimmed since it was last busy) -> trim?
        let cases = [
            (5, 5, true, false),  // quiet, and already trimmed
            (5, 9, false, false), // busy
            (5, 9, true, false),  // busy again after a trim
            (9, 9, false, true),  // quiet after being busy
        ];
        for (seen, now, trimmed, want) in cases {
            assert_eq!(quiet(seen, now, trimmed), want, "{seen} {now} {trimmed}");
        }
    }
}
