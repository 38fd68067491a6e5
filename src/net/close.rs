//! Closing a socket with close(2) instead of through the runtime.
//!
//! On io_uring, monoio closes a dropped socket with a close op that nobody awaits, and dropping
//! that op submits an ASYNC_CANCEL for it: two ring entries per socket, and the cancel searches
//! the ring's pending and io-wq work for an op that has long completed (about 1.4% of
//! new-connection's CPU). A socket none of whose ops is in flight can be taken back from the
//! runtime and closed directly: one syscall, no ring entry, no allocation for the ignored op.
//! A socket that still has an op in flight (a readiness wait given up on a timeout, whose own
//! cancel has not completed) is shared with that op, so taking it back would panic; such a
//! socket is dropped as before.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

/// Closes `sock` now with close(2).
///
/// The caller must know that every op the runtime ever started on `sock` has completed: no
/// readiness wait, read or write future on it was dropped before it finished. Otherwise
/// `into_raw_fd` panics (the dropped op still holds the descriptor); use `drop` then.
pub fn close_settled<S: IntoRawFd>(sock: S) {
    let fd = sock.into_raw_fd();
    // SAFETY: `into_raw_fd` released the descriptor from its only owner (the runtime forgot
    // it, and on epoll deregistered it), so this is now the sole owner and closes it once.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}
