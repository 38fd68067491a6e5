//! One direction of a layer-4 tunnel: how bytes get from one socket to the other, holding as
//! little as the traffic needs.
//!
//! A direction starts by copying: recv(2) into a stack buffer and send(2) on, both with
//! MSG_DONTWAIT, so a short connection never makes its sockets nonblocking, never takes a pipe
//! and holds no buffer. A read that fills the stack buffer marks the direction as bulk: it then
//! takes a pipe from the worker's pool and splices (socket -> pipe -> socket, the bytes stay in
//! the kernel), and a splice that moves less than a copy's worth goes back to copying. A bulk
//! direction whose source stays quiet for `STALL_GRACE` gives its empty pipe back, so an idle
//! tunnel holds its two sockets and nothing else; one whose destination takes nothing for as
//! long moves what the pipe holds to user space and gives the pipe back too.

use std::cell::Cell;
use std::io;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::Instant;

use monoio::net::{TcpStream, UnixStream};

use crate::net::splice::{Pipe, SPILL_MAX, STALL_GRACE};
use crate::observe::metrics::TunnelCounters;

/// The stack buffer one copy step reads into. A read that fills it marks the direction as bulk
/// (and splicing takes over); smaller messages (most request/response and WebSocket-style
/// traffic) stay on the copy path, which costs the same two syscalls per message as a splice
/// in and out but no pipe.
pub const COPY_CHUNK: usize = 16 * 1024;

/// A splice moving less than this returns a bulk direction to copying.
const SPLICE_MIN: usize = COPY_CHUNK / 4;

/// A connection the tunnel drives: readiness from the runtime (an io_uring poll, or epoll), the
/// data moved by nonblocking syscalls on the raw descriptor; closed with close(2) after a clean
/// end (`net::close`).
pub trait Conn: AsRawFd + IntoRawFd {
    async fn readable(&self) -> io::Result<()>;
    async fn writable(&self) -> io::Result<()>;
}

// `relaxed: false`: on the epoll driver readiness is re-checked with poll(2), because our own
// syscalls (not the runtime's) consumed the last readiness.
impl Conn for TcpStream {
    async fn readable(&self) -> io::Result<()> {
        TcpStream::readable(self, false).await
    }
    async fn writable(&self) -> io::Result<()> {
        TcpStream::writable(self, false).await
    }
}

impl Conn for UnixStream {
    async fn readable(&self) -> io::Result<()> {
        UnixStream::readable(self, false).await
    }
    async fn writable(&self) -> io::Result<()> {
        UnixStream::writable(self, false).await
    }
}

/// A direction's failure: which end of it failed.
pub enum DirError {
    Read(io::Error),
    Write(io::Error),
}

/// What a tunnel's two directions share.
pub struct Shared<'a> {
    /// When a byte last moved either way (for the idle timeout).
    pub last: &'a Cell<Instant>,
    pub counters: &'a TunnelCounters,
    /// Whether both sockets are nonblocking yet: splice(2) needs O_NONBLOCK on the socket
    /// (io_uring's sockets are blocking), the copy path does not (MSG_DONTWAIT), so it is set
    /// once, when a direction first goes bulk.
    pub nonblocking: &'a Cell<bool>,
    /// Both sockets, for setting O_NONBLOCK.
    pub fds: [RawFd; 2],
    /// Directions that reached their source's EOF.
    pub ended: &'a Cell<u8>,
    /// A readiness wait was given up on a timeout: its op may still be in flight (holding its
    /// socket) until the runtime reaps its cancel, so the sockets are closed the runtime's way.
    pub gave_up: &'a Cell<bool>,
}

/// One direction's state between steps.
#[derive(Default)]
pub struct Way {
    /// The pipe of a bulk direction (none while it copies or idles).
    pipe: Option<Pipe>,
    /// Reads fill the copy buffer: splice the next ones.
    bulk: bool,
    /// Never splice (no pipe could be had, or a test asks for copying).
    copy_only: bool,
    /// Copied bytes the destination could not take yet (freed once sent).
    unsent: Vec<u8>,
}

impl Way {
    /// A direction that only ever copies.
    #[cfg(test)]
    pub fn copying() -> Way {
        Way {
            copy_only: true,
            ..Way::default()
        }
    }

    /// Returns an empty pipe to the pool (after a clean end; a pipe that may hold bytes is
    /// dropped instead, so the next user never sends them).
    pub fn finish(self, clean: bool) {
        if let (Some(p), true) = (self.pipe, clean) {
            p.give_back();
        }
    }
}

/// What one read step did.
enum Step {
    Moved(usize),
    Eof,
    WouldBlock,
}

/// One direction, until EOF (passed on as SHUT_WR) or an error. `try_first`: read before
/// waiting for readiness (the client's first bytes are usually there by the time the upstream
/// answered the connect; the upstream's are not).
pub async fn one_way(
    src: &impl Conn,
    dst: &impl Conn,
    way: &mut Way,
    shared: &Shared<'_>,
    moved: &Cell<u64>,
    try_first: bool,
) -> Result<(), DirError> {
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    let mut try_read = try_first;
    loop {
        if !try_read {
            wait_readable(src, way, shared.gave_up)
                .await
                .map_err(DirError::Read)?;
        }
        try_read = true;
        let splicing = way.bulk && !way.copy_only && take_pipe(way, shared);
        let step = if splicing {
            let p = way.pipe.as_mut().expect("taken above");
            match p.fill(src_fd, dst_fd, usize::MAX) {
                Ok(0) => Step::Eof,
                Ok(n) => Step::Moved(n),
                Err(e) => classify(e).map_err(DirError::Read)?,
            }
        } else {
            copy_once(src_fd, dst_fd, &mut way.unsent)?
        };
        let n = match step {
            Step::Eof => {
                shared.ended.set(shared.ended.get() + 1);
                // The last direction to end needs no shutdown: both sockets are closed next,
                // and a close with nothing unread sends the same FIN (a syscall less).
                if shared.ended.get() == 2 {
                    return Ok(());
                }
                return socket_shutdown(dst_fd).map_err(DirError::Write);
            }
            Step::WouldBlock => {
                try_read = false;
                continue;
            }
            Step::Moved(n) => n,
        };
        shared.last.set(Instant::now());
        if splicing {
            drain_pipe(dst, way, n, shared.gave_up).await?;
            // A short splice: the flow has slowed to messages, which copying serves without a
            // pipe. Well under a copy's worth, so that a bulk flow's splices, which stop short
            // of a round size where segments end, do not flip it back and forth.
            if n < SPLICE_MIN {
                way.bulk = false;
                if let Some(p) = way.pipe.take() {
                    p.give_back();
                }
            }
        } else {
            send_unsent(dst, &mut way.unsent).await?;
            if n == COPY_CHUNK {
                way.bulk = true;
            } else {
                // A short read drained the socket: wait for more instead of a read that would
                // find nothing.
                try_read = false;
            }
        }
        shared.last.set(Instant::now());
        let counter = match splicing {
            true => &shared.counters.spliced_bytes,
            false => &shared.counters.copied_bytes,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        moved.set(moved.get() + n as u64);
    }
}

/// Waits until `src` is readable. A held (empty) pipe goes back to the pool once the source
/// has been quiet for `STALL_GRACE`: an idle tunnel holds no pipe.
async fn wait_readable(src: &impl Conn, way: &mut Way, gave_up: &Cell<bool>) -> io::Result<()> {
    if way.pipe.is_none() {
        return src.readable().await;
    }
    match monoio::time::timeout(STALL_GRACE, src.readable()).await {
        Ok(r) => r,
        Err(_) => {
            gave_up.set(true);
            if let Some(p) = way.pipe.take() {
                p.give_back();
            }
            src.readable().await
        }
    }
}

/// Makes sure a bulk direction holds a pipe (and both sockets are nonblocking, as splice
/// needs); false when none can be had (out of descriptors): the direction copies from then on.
fn take_pipe(way: &mut Way, shared: &Shared<'_>) -> bool {
    if !shared.nonblocking.get() {
        for fd in shared.fds {
            if let Err(e) = socket(fd).set_nonblocking(true) {
                tracing::debug!("cannot make a tunnel socket nonblocking ({e}); copying");
                way.copy_only = true;
                return false;
            }
        }
        shared.nonblocking.set(true);
    }
    if way.pipe.is_some() {
        return true;
    }
    match Pipe::take() {
        Ok(p) => {
            way.pipe = Some(p);
            true
        }
        Err(e) => {
            tracing::debug!("no pipe for splice ({e}); copying");
            way.copy_only = true;
            false
        }
    }
}

/// Splices the `n` bytes the pipe holds out to `dst`. A destination that takes nothing for
/// `STALL_GRACE` gets the rest (at most `SPILL_MAX`, a base pipe's worth) through user space
/// instead, and the pipe goes back to the pool: a stalled reader holds no pipe.
async fn drain_pipe(
    dst: &impl Conn,
    way: &mut Way,
    n: usize,
    gave_up: &Cell<bool>,
) -> Result<(), DirError> {
    let dst_fd = dst.as_raw_fd();
    let mut left = n;
    while left > 0 {
        let p = way
            .pipe
            .as_mut()
            .expect("a filled pipe is held until drained");
        match p.drain(dst_fd, left) {
            Ok(0) => return Err(DirError::Write(io::ErrorKind::WriteZero.into())),
            Ok(m) => left -= m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let waited = monoio::time::timeout(STALL_GRACE, dst.writable()).await;
                gave_up.set(gave_up.get() || waited.is_err());
                match waited {
                    Ok(r) => r.map_err(DirError::Write)?,
                    Err(_) if left <= SPILL_MAX => {
                        p.spill(&mut way.unsent, left).map_err(DirError::Write)?;
                        if let Some(p) = way.pipe.take() {
                            p.give_back();
                        }
                        return send_unsent(dst, &mut way.unsent).await;
                    }
                    Err(_) => dst.writable().await.map_err(DirError::Write)?,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DirError::Write(e)),
        }
    }
    Ok(())
}

/// A read error as a step: WouldBlock and EINTR are not failures.
fn classify(e: io::Error) -> io::Result<Step> {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(Step::WouldBlock),
        _ => Err(e),
    }
}

/// Reads up to `COPY_CHUNK` bytes from `src` into a stack buffer and sends what `dst` takes at
/// once; the rest goes to `unsent` (which is empty on entry).
fn copy_once(src: RawFd, dst: RawFd, unsent: &mut Vec<u8>) -> Result<Step, DirError> {
    // Left uninitialised: zeroing 16 KiB for every message (and for each EOF) cost more than
    // the copy of a small one.
    let mut space = [MaybeUninit::<u8>::uninit(); COPY_CHUNK];
    let buf = match recv(src, &mut space) {
        Ok([]) => return Ok(Step::Eof),
        Ok(buf) => buf,
        Err(e) => return classify(e).map_err(DirError::Read),
    };
    let n = buf.len();
    let mut done = 0;
    while done < n {
        match send(dst, &buf[done..n]) {
            Ok(0) => return Err(DirError::Write(io::ErrorKind::WriteZero.into())),
            Ok(m) => done += m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                unsent.extend_from_slice(&buf[done..n]);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DirError::Write(e)),
        }
    }
    Ok(Step::Moved(n))
}

/// Sends what `copy_once` could not, waiting for `dst` to take it; then frees the buffer.
async fn send_unsent(dst: &impl Conn, unsent: &mut Vec<u8>) -> Result<(), DirError> {
    if unsent.is_empty() {
        return Ok(());
    }
    let mut done = 0;
    while done < unsent.len() {
        match send(dst.as_raw_fd(), &unsent[done..]) {
            Ok(0) => return Err(DirError::Write(io::ErrorKind::WriteZero.into())),
            Ok(m) => done += m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                dst.writable().await.map_err(DirError::Write)?
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DirError::Write(e)),
        }
    }
    // Only a blocked send allocates it: a quiet direction holds no buffer.
    *unsent = Vec::new();
    Ok(())
}

/// One nonblocking recv(2) into `space`, whatever the socket's own mode: the bytes received.
fn recv(fd: RawFd, space: &mut [MaybeUninit<u8>]) -> io::Result<&[u8]> {
    // SAFETY: recv writes at most `space.len()` bytes into `space`, which is ours and live
    // across the call; `fd` is an open socket of the calling tunnel.
    let n = unsafe {
        libc::recv(
            fd,
            space.as_mut_ptr().cast(),
            space.len(),
            libc::MSG_DONTWAIT,
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: recv initialised the first `n` bytes (n <= space.len()).
    Ok(unsafe { std::slice::from_raw_parts(space.as_ptr().cast::<u8>(), n) })
}

/// One nonblocking send(2), whatever the socket's own mode; a peer gone is an error, not
/// SIGPIPE.
fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: send reads at most `buf.len()` bytes from `buf`, live across the call; `fd` is an
    // open socket of the calling tunnel.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// The socket behind `fd`, borrowed: for options, shutdown and plain reads and writes.
pub fn socket(fd: RawFd) -> ManuallyDrop<socket2::Socket> {
    // SAFETY: `fd` is an open socket owned by a stream of the calling tunnel that outlives the
    // returned value; ManuallyDrop keeps this borrow from closing it.
    ManuallyDrop::new(unsafe { socket2::Socket::from_raw_fd(fd) })
}

/// Passes a direction's end on (SHUT_WR); the other direction keeps flowing.
fn socket_shutdown(fd: RawFd) -> io::Result<()> {
    socket(fd).shutdown(std::net::Shutdown::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream as StdUnix;
    use std::time::Duration;

    /// Drives `one_way` from `near_a` to `near_b` with `way` while threads write `chunks` into
    /// `far_a` (pausing `gap` between them, then FIN) and read `far_b` to its end: the bytes read
    /// and the counters.
    fn carry(way: Way, chunks: Vec<Vec<u8>>, gap: Duration) -> (Vec<u8>, TunnelCounters) {
        carry_to(way, chunks, gap, Duration::ZERO)
    }

    /// `carry`, with the reader starting only after `stall`.
    fn carry_to(
        mut way: Way,
        chunks: Vec<Vec<u8>>,
        gap: Duration,
        stall: Duration,
    ) -> (Vec<u8>, TunnelCounters) {
        let (near_a, mut far_a) = StdUnix::pair().unwrap();
        let (near_b, mut far_b) = StdUnix::pair().unwrap();
        let total: usize = chunks.iter().map(Vec::len).sum();
        let writer = std::thread::spawn(move || {
            for c in chunks {
                far_a.write_all(&c).unwrap();
                std::thread::sleep(gap);
            }
            far_a.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let reader = std::thread::spawn(move || {
            std::thread::sleep(stall);
            let mut got = Vec::new();
            far_b.read_to_end(&mut got).unwrap();
            got
        });
        let counters = TunnelCounters::default();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = UnixStream::from_std(near_a).unwrap();
            let b = UnixStream::from_std(near_b).unwrap();
            let last = Cell::new(Instant::now());
            let nonblocking = Cell::new(false);
            let ended = Cell::new(0);
            let gave_up = Cell::new(false);
            let shared = Shared {
                last: &last,
                counters: &counters,
                nonblocking: &nonblocking,
                fds: [a.as_raw_fd(), b.as_raw_fd()],
                ended: &ended,
                gave_up: &gave_up,
            };
            let moved = Cell::new(0);
            let r = one_way(&a, &b, &mut way, &shared, &moved, false).await;
            assert_eq!(moved.get(), total as u64);
            assert!(r.is_ok(), "one_way failed");
            way.finish(true);
        });
        writer.join().unwrap();
        (reader.join().unwrap(), counters)
    }

    fn data() -> Vec<u8> {
        (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    #[test]
    fn copying_moves_every_byte_and_passes_the_fin_on() {
        let (got, counters) = carry(Way::copying(), vec![data()], Duration::ZERO);
        assert!(got == data(), "bytes differ");
        assert_eq!(count(&counters.copied_bytes), 3_000_000);
        assert_eq!(count(&counters.spliced_bytes), 0);
    }

    #[test]
    fn a_bulk_flow_is_spliced_after_its_first_full_copy() {
        let (got, counters) = carry(Way::default(), vec![data()], Duration::ZERO);
        assert!(got == data(), "bytes differ");
        let (copied, spliced) = (
            count(&counters.copied_bytes),
            count(&counters.spliced_bytes),
        );
        assert_eq!(copied + spliced, 3_000_000);
        assert!(spliced >= 2_000_000, "only {spliced} bytes spliced");
    }

    #[test]
    fn a_bulk_flow_to_a_reader_that_stalls_arrives_whole_and_in_order() {
        // Stalled past the grace: what the pipe held goes on through user space.
        let stall = STALL_GRACE * 3;
        let (got, counters) = carry_to(Way::default(), vec![data()], Duration::ZERO, stall);
        assert!(got == data(), "bytes differ");
        let moved = count(&counters.copied_bytes) + count(&counters.spliced_bytes);
        assert_eq!(moved, 3_000_000);
    }

    #[test]
    fn small_messages_are_copied_and_never_take_a_pipe() {
        let msgs: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100 + i as usize]).collect();
        let want: Vec<u8> = msgs.concat();
        let (got, counters) = carry(Way::default(), msgs, Duration::from_millis(2));
        assert!(got == want, "bytes differ");
        assert_eq!(count(&counters.copied_bytes), want.len() as u64);
        assert_eq!(count(&counters.spliced_bytes), 0);
    }
}
