//! Splice pipes: the one pipe type that HTTP bodies and layer-4 tunnels move bytes through
//! (socket -> pipe -> socket, never entering user space), and the worker's pool of them.
//!
//! Splices are plain nonblocking syscalls driven by the runtime's readiness, as HAProxy does,
//! not io_uring's `IORING_OP_SPLICE`: that always runs in an io-wq kernel thread which blocks
//! while the socket is idle, a context switch per chunk and a parked thread per idle transfer.
//! Callers wait for readiness on `WouldBlock` and retry.

use std::cell::{Cell, RefCell};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Capacity a pipe grows to once a splice fills it (a bulk transfer): every splice in also
/// sends an ACK and every splice out pushes segments, so the cost per byte falls with the size
/// of a step. 1 MiB is the default pipe-max-size, so unprivileged processes may ask for it.
pub const PIPE_BULK_SIZE: usize = 1024 * 1024;
/// Pipes a worker grows to `PIPE_BULK_SIZE` at once: 16 MiB of capacity, a quarter of the
/// default pipe-user-pages-soft, so a few workers leave the user room for default pipes.
/// Transfers beyond it keep the default capacity.
pub const BIG_PIPES_MAX: usize = 16;
/// A destination's send buffer must be at least this large before a pipe feeding it grows to
/// `PIPE_BULK_SIZE`: a big pipe only pays when the socket can take a big pipe's worth at once,
/// and a client that cannot (a remote one's send buffer starts at tens of KiB, and a slow
/// reader's never grows) would leave up to a MiB stranded in it. Loopback and fast links
/// autotune their send buffers to megabytes.
pub const GROW_MIN_SNDBUF: usize = 2 * PIPE_BULK_SIZE;
/// How long a transfer may wait on one side, holding a pipe, before it counts as stalled: then an
/// empty pipe goes back to the pool while it waits on, and a destination that takes nothing
/// for this long gets the pipe's bytes through user space instead (`Pipe::spill`), so a slow
/// reader holds two descriptors, not four. Longer than a round trip of any live client: one
/// whose send buffer is full still frees room every round trip.
pub const STALL_GRACE: std::time::Duration = std::time::Duration::from_millis(250);
/// Most bytes a stalled transfer moves out of its pipe into user space to give the pipe back: a
/// base pipe's worth (pipes that never grew hold no more). A grown pipe holding more stays with
/// its transfer (at most `BIG_PIPES_MAX` per worker).
pub const SPILL_MAX: usize = 64 * 1024;
/// Empty pipes a worker keeps: creating and closing two pipes costs six syscalls per tunnel,
/// a third of a short tunnel's work. An idle pipe holds two descriptors and no buffer pages.
const POOL_MAX: usize = 64;

// The pool is a thread-local, not a field of the worker's context: a worker is one thread
// (thread-per-core), so a thread-local is exactly the per-worker pool, and it is reachable from
// here without this leaf importing the worker (or every caller threading the context through).
thread_local! {
    /// This worker's empty pipes, all at their base capacity.
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
    /// This worker's pipes grown to `PIPE_BULK_SIZE`, pooled or not.
    static BIG_PIPES: Cell<usize> = const { Cell::new(0) };
}

/// A nonblocking pipe pair, used by one transfer direction at a time. A pipe that may still
/// hold bytes (after an error) must be dropped, never given back: the next user would send
/// them.
pub struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    /// Its capacity in bytes: the most one splice in asks for.
    size: usize,
    /// The capacity the kernel gave it at creation, restored before it is pooled.
    base: usize,
    /// Whether it was grown to `PIPE_BULK_SIZE` (and counts in `BIG_PIPES`).
    big: bool,
    /// Whether the kernel refused to grow it (not asked again until it is pooled).
    refused: bool,
    /// Not `Send`: `BIG_PIPES` is counted on the thread that grew the pipe.
    _local: PhantomData<*const ()>,
}

impl Pipe {
    /// An empty pipe from this worker's pool, or a new one (an error when out of descriptors;
    /// callers then copy through a buffer).
    pub fn take() -> io::Result<Pipe> {
        match POOL.with(|p| p.borrow_mut().pop()) {
            Some(p) => Ok(p),
            None => Pipe::new(),
        }
    }

    /// Returns a pipe known to be empty to this worker's pool (closing it when the pool is
    /// full). A grown pipe shrinks first: pooled pipes must not hold the budget or the user's
    /// pipe pages.
    pub fn give_back(mut self) {
        if self.big {
            if set_pipe_size(&self.w, self.base).is_err() {
                return;
            }
            self.unmark_big();
            self.size = self.base;
        }
        self.refused = false;
        POOL.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < POOL_MAX {
                pool.push(self);
            }
        });
    }

    /// The most bytes one `fill` moves.
    pub fn capacity(&self) -> usize {
        self.size
    }

    /// Splices up to `len` bytes (at most the capacity) from `src` into the empty pipe;
    /// `Ok(0)` is end of stream. A splice that filled the pipe grows it for the next one when
    /// `dst`, the socket the bytes go to, can take a grown pipe's worth (`GROW_MIN_SNDBUF`).
    pub fn fill(&mut self, src: RawFd, dst: RawFd, len: usize) -> io::Result<usize> {
        let n = splice(src, self.w.as_raw_fd(), len.min(self.size))?;
        // A fill may stop short of the byte size when fragments leave pages part empty.
        // The budget is checked first so the getsockopt is spent only on a pipe that may grow.
        if n * 2 >= self.size
            && !self.big
            && !self.refused
            && BIG_PIPES.get() < BIG_PIPES_MAX
            && may_grow(send_buffer(dst))
        {
            self.grow();
        }
        Ok(n)
    }

    /// Reads exactly `len` bytes the pipe holds onto the end of `out`, leaving it empty when it
    /// held `len`: the way out for bytes whose destination stalled, so the pipe can go back.
    pub fn spill(&mut self, out: &mut Vec<u8>, len: usize) -> io::Result<()> {
        out.reserve(len);
        let mut left = len;
        while left > 0 {
            let spare = out.spare_capacity_mut();
            let want = left.min(spare.len());
            // SAFETY: read(2) writes at most `want` bytes into the spare capacity, which is
            // allocated and not aliased; the length grows only by what it wrote.
            let n = unsafe { libc::read(self.r.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
            match usize::try_from(n) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                // SAFETY: the kernel initialised these `n` bytes just above.
                Ok(n) => unsafe {
                    out.set_len(out.len() + n);
                    left -= n;
                },
                Err(_) => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Splices up to `len` of the bytes the pipe holds out to `dst`.
    pub fn drain(&mut self, dst: RawFd, len: usize) -> io::Result<usize> {
        splice(self.r.as_raw_fd(), dst, len)
    }

    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array, which lives across the call.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are new, open, and owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_GETPIPE_SZ on an owned pipe descriptor has no memory effects.
        let size = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
        // The kernel may hand out smaller pipes to a user over pipe-user-pages-soft.
        let size = usize::try_from(size).map_err(|_| io::Error::last_os_error())?;
        Ok(Pipe {
            r,
            w,
            size,
            base: size,
            big: false,
            refused: false,
            _local: PhantomData,
        })
    }

    /// Grows a filled pipe to `PIPE_BULK_SIZE`, within the worker's budget: only bulk
    /// transfers pay for big pipes, which count against the user's pipe-user-pages-soft (over
    /// it, the kernel gives every new pipe of the user just two pages).
    fn grow(&mut self) {
        if self.big || self.refused || BIG_PIPES.get() >= BIG_PIPES_MAX {
            return;
        }
        match set_pipe_size(&self.w, PIPE_BULK_SIZE) {
            Ok(size) => {
                self.size = size;
                self.big = true;
                BIG_PIPES.set(BIG_PIPES.get() + 1);
            }
            Err(_) => self.refused = true,
        }
    }

    fn unmark_big(&mut self) {
        if std::mem::take(&mut self.big) {
            BIG_PIPES.set(BIG_PIPES.get() - 1);
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.unmark_big();
    }
}

/// Whether a pipe feeding a socket whose send buffer is `sndbuf` bytes (`None`: not a socket)
/// may grow to `PIPE_BULK_SIZE`.
fn may_grow(sndbuf: Option<usize>) -> bool {
    sndbuf.is_none_or(|b| b >= GROW_MIN_SNDBUF)
}

/// SO_SNDBUF of a socket (the kernel's doubled figure, as it accounts it); `None` if `fd` is
/// not a socket.
fn send_buffer(fd: RawFd) -> Option<usize> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`, which lives across the call.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw mut v).cast(),
            &mut len,
        )
    };
    if r == 0 {
        usize::try_from(v).ok()
    } else {
        None
    }
}

/// Sets a pipe's capacity and returns the one the kernel chose (a power of two pages).
fn set_pipe_size(w: &OwnedFd, size: usize) -> io::Result<usize> {
    let size = libc::c_int::try_from(size).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: F_SETPIPE_SZ on an owned pipe descriptor has no memory effects; it fails (and
    // changes nothing) over a limit or below the bytes the pipe holds.
    let got = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
    usize::try_from(got).map_err(|_| io::Error::last_os_error())
}

/// One nonblocking splice(2) of up to `len` bytes; one end is the pipe.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    let null = std::ptr::null_mut();
    // SAFETY: with null offsets splice(2) touches no memory of ours; the pipe end is owned by
    // the calling `Pipe` and the other descriptor by the caller's live stream.
    let n = unsafe { libc::splice(from, null, to, null, len, flags) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_filled_pipe_grows_within_the_budget_and_shrinks_before_it_is_pooled() {
        let mut p = Pipe::new().unwrap();
        let base = p.size;
        p.grow();
        if !p.big {
            // The kernel may refuse (a user over pipe-user-pages-soft); nothing to check.
            return;
        }
        assert!(p.size >= PIPE_BULK_SIZE);
        assert_eq!(BIG_PIPES.get(), 1);
        p.give_back();
        assert_eq!(BIG_PIPES.get(), 0);
        assert_eq!(Pipe::take().unwrap().size, base, "pooled at its first size");
        let mut pipes: Vec<Pipe> = (0..=BIG_PIPES_MAX).map(|_| Pipe::new().unwrap()).collect();
        pipes.iter_mut().for_each(Pipe::grow);
        assert!(pipes.iter().filter(|p| p.big).count() <= BIG_PIPES_MAX);
        drop(pipes);
        assert_eq!(BIG_PIPES.get(), 0);
    }

    #[test]
    fn a_pipe_grows_only_for_a_destination_whose_send_buffer_takes_a_grown_pipe() {
        let table = [
            (None, true, "not a socket"),
            (Some(GROW_MIN_SNDBUF), true, "exactly enough"),
            (Some(4 << 20), true, "loopback, autotuned"),
            (Some(GROW_MIN_SNDBUF - 1), false, "one byte short"),
            (
                Some(373_248),
                false,
                "a remote client's (Ethernet MSS, small window)",
            ),
            (Some(212_992), false, "a Unix socket's default"),
        ];
        for (sndbuf, want, why) in table {
            assert_eq!(may_grow(sndbuf), want, "{why}");
        }
    }

    #[test]
    fn a_full_pipe_for_a_small_send_buffer_stays_small_and_spills_the_rest_in_order() {
        let (mut far_a, near_a) = UnixStream::pair().unwrap();
        let (near_b, mut far_b) = UnixStream::pair().unwrap();
        let mut p = Pipe::take().unwrap();
        let base = p.capacity();
        let data: Vec<u8> = (0..base as u32).map(|i| (i % 251) as u8).collect();
        let writer = std::thread::spawn(move || far_a.write_all(&data).map(|_| data));
        let mut moved = 0;
        // Pipe operations do not block: the writer thread may not have written yet.
        let retry = |r: std::io::Result<usize>| match r {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(1));
                0
            }
            r => r.unwrap(),
        };
        while moved < base {
            moved += retry(p.fill(near_a.as_raw_fd(), near_b.as_raw_fd(), base - moved));
        }
        // A Unix socket's send buffer is far below GROW_MIN_SNDBUF.
        assert_eq!(
            p.capacity(),
            base,
            "grew for a destination that cannot take it"
        );
        let half = moved / 2;
        let mut out = 0;
        while out < half {
            out += retry(p.drain(near_b.as_raw_fd(), half - out));
        }
        let mut spilled = Vec::new();
        p.spill(&mut spilled, moved - half).unwrap();
        drop(near_b);
        let mut got = Vec::new();
        far_b.read_to_end(&mut got).unwrap();
        got.extend_from_slice(&spilled);
        let data = writer.join().unwrap().unwrap();
        assert!(got == data, "bytes differ");
        // Empty now: another read finds nothing (and would block).
        let e = p.spill(&mut spilled, 1).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    }
}
