//! ringfloor: a MEASURING INSTRUMENT, not product code. The cheapest HTTP/1.1 keep-alive relay
//! we could write directly on io_uring (the `io-uring` crate, no runtime), to find the floor of
//! issue 18's small-keepalive goal: what one request costs a relay that does one read and one
//! write per direction, first on a ring driven as monoio 0.2.4 drives it (`plain`), then with the
//! io_uring features monoio does not expose (`tuned`), each switchable alone.
//!
//! It relays exactly the small-keepalive scenario: GET requests without bodies, responses with
//! Content-Length, one request at a time per client connection, one backend keep-alive
//! connection per client connection (opened on its first request; when the client goes, it is
//! pooled for the next client if nothing is in flight on it, else closed). Anything
//! else (a request body, a chunked response, a head over the buffer) closes the connection.
//! No routing, no header rewriting, no timeouts, no limits: do not put it in front of anything.
//!
//! ```text
//! ringfloor LISTEN BACKEND MODE
//!   MODE  plain | tuned, then +SWITCH (on) or -SWITCH (off) any number of times
//! ```
//! Switches (see `Tune`): acceptmulti, recvmulti, upmulti, fixed, ringfd, pollfirst, taskrun. `plain` has only `taskrun` (ringway sets monoio's ring up with those flags);
//! `tuned` has all of them.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Submission queue size: far above the ops in flight for 64 connections.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue size: room for every op in flight plus multishot bursts.
const CQ_ENTRIES: u32 = 8192;
/// Per-direction buffer of a connection (a head must fit; small-keepalive's are ~100 bytes).
const BUF_SIZE: usize = 16 * 1024;
/// Provided-buffer ring: entries (a power of two) and bytes each.
const PBUF_ENTRIES: u16 = 1024;
const PBUF_SIZE: usize = 4096;
/// Buffer group id of the provided-buffer ring.
const BGID: u16 = 0;
/// Direct descriptor table size (two per connection).
const FIXED_FILES: u32 = 16384;
/// Idle upstream connections kept when their client goes (new-connection reuses them, as
/// ringway's and the peers' upstream pools do).
const POOL_MAX: usize = 256;

// Op kinds in the low byte of user_data; the connection index above it.
const OP_ACCEPT: u64 = 1;
const OP_CRECV: u64 = 2;
const OP_CSEND: u64 = 3;
const OP_USOCKET: u64 = 4;
const OP_UCONNECT: u64 = 5;
const OP_USEND: u64 = 6;
const OP_URECV: u64 = 7;
const OP_CLOSE: u64 = 8;
const OP_CANCEL: u64 = 9;

// Kernel ABI constants the io-uring crate keeps private (include/uapi/linux/io_uring.h).
/// sqe->ioprio bit of a receive: arm the poll without trying the receive first.
const IORING_RECVSEND_POLL_FIRST: u16 = 1;
/// io_uring_register opcode registering the ring fd itself.
const IORING_REGISTER_RING_FDS: libc::c_uint = 20;
/// io_uring_enter flags: wait for completions; the fd argument is a registered ring index.
const IORING_ENTER_GETEVENTS: libc::c_uint = 1;
const IORING_ENTER_REGISTERED_RING: libc::c_uint = 16;

/// The tunings, each a switch so that each one's saving can be measured alone.
#[derive(Clone, Copy, Default, Debug)]
struct Tune {
    /// One multishot accept instead of an accept re-armed per connection.
    accept_multi: bool,
    /// Client reads: one multishot receive per connection into a registered provided-buffer
    /// ring (upstream reads select provided buffers too), instead of a receive per read into the
    /// connection's own buffer.
    recv_multi: bool,
    /// Upstream reads multishot too (needs recv_multi; costs a cancel per closed connection).
    up_multi: bool,
    /// Direct descriptors: accept and socket into the registered file table, ops use Fixed.
    fixed: bool,
    /// Registered ring fd: io_uring_enter skips the fd lookup.
    ring_fd: bool,
    /// IORING_RECVSEND_POLL_FIRST on the upstream receive, submitted with the request's send
    /// (the response is never there yet, so trying it first is wasted).
    poll_first: bool,
    /// COOP_TASKRUN + SINGLE_ISSUER + DEFER_TASKRUN (what ringway already sets on monoio's ring).
    taskrun: bool,
}

impl Tune {
    fn parse(mode: &str) -> Result<Tune, String> {
        let all = Tune {
            accept_multi: true,
            recv_multi: true,
            up_multi: true,
            fixed: true,
            ring_fd: true,
            poll_first: true,
            taskrun: true,
        };
        let plain = Tune {
            taskrun: true,
            ..Tune::default()
        };
        let (mut t, mut rest) = if let Some(r) = mode.strip_prefix("plain") {
            (plain, r)
        } else if let Some(r) = mode.strip_prefix("tuned") {
            (all, r)
        } else {
            return Err(format!("mode must start with plain or tuned: {mode}"));
        };
        // +SWITCH turns one on, -SWITCH off.
        while let Some(sign) = rest.chars().next() {
            let on = match sign {
                '+' => true,
                '-' => false,
                _ => return Err(format!("expected +SWITCH or -SWITCH at {rest:?}")),
            };
            let body = &rest[1..];
            let n = body.find(['+', '-']).unwrap_or(body.len());
            let f = match &body[..n] {
                "acceptmulti" => &mut t.accept_multi,
                "recvmulti" => &mut t.recv_multi,
                "upmulti" => &mut t.up_multi,
                "fixed" => &mut t.fixed,
                "ringfd" => &mut t.ring_fd,
                "pollfirst" => &mut t.poll_first,
                "taskrun" => &mut t.taskrun,
                s => return Err(format!("unknown switch {s:?}")),
            };
            *f = on;
            rest = &body[n..];
        }
        if t.up_multi && !t.recv_multi {
            t.recv_multi = true; // multishot receive needs the provided-buffer ring
        }
        Ok(t)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    /// Waiting for (the rest of) a request head.
    Idle,
    /// Opening the upstream connection (socket, connect).
    Connecting,
    /// Request sent or being sent, response being read.
    Upstream,
    /// Response being sent to the client.
    Responding,
}

struct Conn {
    live: bool,
    closing: bool,
    /// Client and upstream descriptors (direct slots with `fixed`); -1 when none.
    c: i32,
    u: i32,
    /// Ops in flight naming this connection (its slot is reused only at 0).
    pending: u32,
    /// Ops in flight on each socket (a closing connection cancels them).
    c_ops: u32,
    u_ops: u32,
    /// A multishot receive is armed on the socket.
    c_multi: bool,
    u_multi: bool,
    state: St,
    /// Client bytes not yet relayed (plain receives straight into it).
    cin: Vec<u8>,
    /// Upstream bytes not yet relayed.
    uin: Vec<u8>,
    /// Length of the request / response being relayed, and bytes of it sent.
    msg_len: usize,
    sent: usize,
    /// The client asked for `Connection: close`: close after this response.
    close_after: bool,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            live: false,
            closing: false,
            c: -1,
            u: -1,
            pending: 0,
            c_ops: 0,
            u_ops: 0,
            c_multi: false,
            u_multi: false,
            state: St::Idle,
            cin: Vec::with_capacity(BUF_SIZE),
            uin: Vec::with_capacity(BUF_SIZE),
            msg_len: 0,
            sent: 0,
            close_after: false,
        }
    }
}

/// The registered provided-buffer ring (`IORING_REGISTER_PBUF_RING`).
struct BufRing {
    ring: *mut types::BufRingEntry,
    bufs: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring) -> io::Result<BufRing> {
        let bytes = PBUF_ENTRIES as usize * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping; checked for MAP_FAILED below. The kernel wants
        // the ring page-aligned, which mmap gives.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut br = BufRing {
            ring: p.cast(),
            bufs: vec![0u8; PBUF_ENTRIES as usize * PBUF_SIZE],
            tail: 0,
        };
        // SAFETY: the mapping lives for the process (never unmapped) and holds PBUF_ENTRIES
        // entries, as registered.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(p as u64, PBUF_ENTRIES, BGID, 0)?;
        }
        for bid in 0..PBUF_ENTRIES {
            br.put(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Queue buffer `bid` for the kernel (visible after `publish`).
    fn put(&mut self, bid: u16) {
        let idx = (self.tail & (PBUF_ENTRIES - 1)) as usize;
        // SAFETY: idx < PBUF_ENTRIES, inside the mapping; the kernel reads entries only up to
        // the published tail, and this one is past it.
        let e = unsafe { &mut *self.ring.add(idx) };
        e.set_addr(self.bufs.as_ptr() as u64 + bid as u64 * PBUF_SIZE as u64);
        e.set_len(PBUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field sits inside the first entry of the mapping; the kernel reads
        // it concurrently, hence the atomic release store.
        unsafe {
            let tail = types::BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn data(&self, bid: u16, n: usize) -> &[u8] {
        let o = bid as usize * PBUF_SIZE;
        &self.bufs[o..o + n]
    }
}

struct Server {
    ring: IoUring,
    tune: Tune,
    listener: i32,
    backend: libc::sockaddr_in,
    conns: Vec<Conn>,
    free: Vec<usize>,
    bufring: Option<BufRing>,
    /// Buffers returned since the last publish (one tail store per loop turn).
    returned: bool,
    /// The registered ring fd's index (`ring_fd`), else -1.
    ring_index: i32,
    /// Idle upstream connections (no op in flight on them).
    pool: Vec<i32>,
}

/// Build an op on a socket: `types::Fixed` for direct descriptors, else `types::Fd`.
macro_rules! on_fd {
    ($fixed:expr, $fd:expr, |$t:ident| $body:expr) => {
        if $fixed {
            let $t = types::Fixed($fd as u32);
            $body
        } else {
            let $t = types::Fd($fd);
            $body
        }
    };
}

fn ud(idx: usize, op: u64) -> u64 {
    (idx as u64) << 8 | op
}

fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The value of a header in a head (first line skipped), compared without case.
fn header<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        if !line[..colon].eq_ignore_ascii_case(name) {
            return None;
        }
        Some(line[colon + 1..].trim_ascii())
    })
}

/// The byte range of a header's whole line (with its CRLF) in a head, first line skipped.
fn header_line(head: &[u8], name: &[u8]) -> Option<(usize, usize)> {
    let mut at = head.iter().position(|&b| b == b'\n')? + 1;
    while at < head.len() {
        let len = head[at..].iter().position(|&b| b == b'\n')? + 1;
        let line = &head[at..at + len];
        if line.len() > name.len()
            && line[name.len()] == b':'
            && line[..name.len()].eq_ignore_ascii_case(name)
        {
            return Some((at, at + len));
        }
        at += len;
    }
    None
}

fn parse_len(v: &[u8]) -> Option<usize> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

impl Server {
    fn push(&mut self, e: squeue::Entry) {
        // SAFETY: every buffer and address an op names lives in `self` (connection buffers are
        // never reallocated while an op on them is in flight) or is static for the process.
        while unsafe { self.ring.submission().push(&e) }.is_err() {
            self.ring.submit().expect("io_uring_enter");
        }
    }

    fn push_conn(&mut self, idx: usize, op: u64, e: squeue::Entry) {
        let c = &mut self.conns[idx];
        c.pending += 1;
        match op {
            OP_CRECV | OP_CSEND => c.c_ops += 1,
            OP_UCONNECT | OP_USEND | OP_URECV => c.u_ops += 1,
            _ => {}
        }
        self.push(e.user_data(ud(idx, op)));
    }

    fn arm_accept(&mut self) {
        let e = if self.tune.accept_multi {
            opcode::AcceptMulti::new(types::Fd(self.listener))
                .allocate_file_index(self.tune.fixed)
                .build()
        } else {
            let mut a = opcode::Accept::new(
                types::Fd(self.listener),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
            if self.tune.fixed {
                a = a.file_index(Some(types::DestinationSlot::auto_target()));
            }
            a.build()
        };
        self.push(e.user_data(OP_ACCEPT));
    }

    fn arm_client_recv(&mut self, idx: usize) {
        let fixed = self.tune.fixed;
        let c = &mut self.conns[idx];
        let fd = c.c;
        let e = if self.tune.recv_multi {
            if c.c_multi {
                return;
            }
            c.c_multi = true;
            on_fd!(fixed, fd, |t| opcode::RecvMulti::new(t, BGID).build())
        } else {
            let len = c.cin.len();
            if len == c.cin.capacity() {
                self.close(idx); // a head bigger than the buffer
                return;
            }
            // SAFETY (of the pointer): inside cin's spare capacity; cin is untouched until
            // the receive completes.
            let ptr = unsafe { c.cin.as_mut_ptr().add(len) };
            let room = (c.cin.capacity() - len) as u32;
            on_fd!(fixed, fd, |t| opcode::Recv::new(t, ptr, room).build())
        };
        self.push_conn(idx, OP_CRECV, e);
    }

    fn arm_upstream_recv(&mut self, idx: usize) {
        let fixed = self.tune.fixed;
        let ioprio = if self.tune.poll_first {
            IORING_RECVSEND_POLL_FIRST
        } else {
            0
        };
        let c = &mut self.conns[idx];
        let fd = c.u;
        let e = if self.tune.up_multi {
            if c.u_multi {
                return;
            }
            c.u_multi = true;
            on_fd!(fixed, fd, |t| opcode::RecvMulti::new(t, BGID).build())
        } else if self.tune.recv_multi {
            on_fd!(fixed, fd, |t| opcode::Recv::new(
                t,
                std::ptr::null_mut(),
                PBUF_SIZE as u32
            )
            .buf_group(BGID)
            .ioprio(ioprio)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT))
        } else {
            let len = c.uin.len();
            if len == c.uin.capacity() {
                self.close(idx);
                return;
            }
            // SAFETY (of the pointer): inside uin's spare capacity, untouched until completion.
            let ptr = unsafe { c.uin.as_mut_ptr().add(len) };
            let room = (c.uin.capacity() - len) as u32;
            on_fd!(fixed, fd, |t| opcode::Recv::new(t, ptr, room)
                .ioprio(ioprio)
                .build())
        };
        self.push_conn(idx, OP_URECV, e);
    }

    fn send_upstream(&mut self, idx: usize) {
        let fixed = self.tune.fixed;
        let c = &mut self.conns[idx];
        c.state = St::Upstream;
        let (fd, ptr, len) = (
            c.u,
            // SAFETY (of the pointer): sent < msg_len <= cin.len(); cin is untouched until
            // the send completes.
            unsafe { c.cin.as_ptr().add(c.sent) },
            (c.msg_len - c.sent) as u32,
        );
        let e = on_fd!(fixed, fd, |t| opcode::Send::new(t, ptr, len).build());
        self.push_conn(idx, OP_USEND, e);
        // With POLL_FIRST the receive can go with the send: it arms a poll without trying.
        if self.tune.poll_first && self.conns[idx].sent == 0 {
            self.arm_upstream_recv(idx);
        }
    }

    fn send_client(&mut self, idx: usize) {
        let fixed = self.tune.fixed;
        let c = &mut self.conns[idx];
        c.state = St::Responding;
        let fd = c.c;
        // SAFETY (of the pointer): sent < msg_len <= uin.len(); uin is untouched until the
        // send completes.
        let ptr = unsafe { c.uin.as_ptr().add(c.sent) };
        let len = (c.msg_len - c.sent) as u32;
        let e = on_fd!(fixed, fd, |t| opcode::Send::new(t, ptr, len).build());
        self.push_conn(idx, OP_CSEND, e);
    }

    /// A whole request head in `cin`: relay it (opening the upstream first if needed).
    fn try_request(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        let Some(end) = head_end(&c.cin) else {
            self.arm_client_recv(idx);
            return;
        };
        let head = &c.cin[..end];
        let body = header(head, b"content-length").is_some_and(|v| v != b"0")
            || header(head, b"transfer-encoding").is_some();
        if body {
            self.close(idx); // bodies are outside what this instrument relays
            return;
        }
        // Connection is hop-by-hop: a client's `close` must not close the pooled upstream.
        let mut end = end;
        if let Some((from, to)) = header_line(&c.cin[..end], b"connection") {
            c.close_after = c.cin[from..to]
                .windows(5)
                .any(|w| w.eq_ignore_ascii_case(b"close"));
            c.cin.drain(from..to);
            end -= to - from;
        }
        c.msg_len = end;
        c.sent = 0;
        if c.u < 0 {
            c.u = self.pool.pop().unwrap_or(-1);
        }
        if c.u >= 0 {
            self.send_upstream(idx);
        } else {
            c.state = St::Connecting;
            self.open_upstream(idx);
        }
    }

    fn open_upstream(&mut self, idx: usize) {
        if self.tune.fixed {
            let e = opcode::Socket::new(libc::AF_INET, libc::SOCK_STREAM, 0)
                .file_index(Some(types::DestinationSlot::auto_target()))
                .build();
            self.push_conn(idx, OP_USOCKET, e);
        } else {
            // SAFETY: plain socket(2); the result is checked.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                self.close(idx);
                return;
            }
            self.conns[idx].u = fd;
            self.connect_upstream(idx);
        }
    }

    fn connect_upstream(&mut self, idx: usize) {
        let fd = self.conns[idx].u;
        let addr = &self.backend as *const libc::sockaddr_in as *const libc::sockaddr;
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let e = on_fd!(self.tune.fixed, fd, |t| opcode::Connect::new(t, addr, len)
            .build());
        self.push_conn(idx, OP_UCONNECT, e);
    }

    /// A whole response in `uin` (head + Content-Length): relay it.
    fn try_response(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        let Some(end) = head_end(&c.uin) else {
            self.arm_upstream_recv(idx);
            return;
        };
        let Some(cl) = header(&c.uin[..end], b"content-length").and_then(parse_len) else {
            self.close(idx); // chunked or close-delimited: not relayed here
            return;
        };
        if end + cl > c.uin.capacity() {
            self.close(idx);
            return;
        }
        if c.uin.len() < end + cl {
            self.arm_upstream_recv(idx);
            return;
        }
        c.msg_len = end + cl;
        c.sent = 0;
        self.send_client(idx);
    }

    /// Bytes a receive brought: the connection's own buffer (plain, already in place) or a
    /// provided buffer (copied, and the buffer goes straight back to the ring).
    fn take(&mut self, idx: usize, upstream: bool, res: i32, flags: u32) -> bool {
        let n = res as usize;
        match cqueue::buffer_select(flags) {
            Some(bid) => {
                let br = self.bufring.as_mut().expect("buffer ring");
                let c = &mut self.conns[idx];
                let dst = if upstream { &mut c.uin } else { &mut c.cin };
                let fits = dst.len() + n <= dst.capacity();
                if fits {
                    dst.extend_from_slice(br.data(bid, n));
                }
                br.put(bid);
                self.returned = true;
                fits
            }
            None => {
                let c = &mut self.conns[idx];
                let dst = if upstream { &mut c.uin } else { &mut c.cin };
                // SAFETY: the kernel wrote n bytes into the spare capacity we gave it.
                unsafe { dst.set_len(dst.len() + n) };
                true
            }
        }
    }

    fn close(&mut self, idx: usize) {
        let fixed = self.tune.fixed;
        let c = &mut self.conns[idx];
        if c.closing {
            return;
        }
        c.closing = true;
        let (cfd, mut ufd, c_busy, u_busy) = (c.c, c.u, c.c_ops > 0, c.u_ops > 0);
        // An upstream between exchanges, with nothing in flight on it, goes to the pool.
        if ufd >= 0
            && !u_busy
            && c.state == St::Idle
            && c.uin.is_empty()
            && self.pool.len() < POOL_MAX
        {
            self.pool.push(ufd);
            ufd = -1;
        }
        for (fd, busy) in [(cfd, c_busy), (ufd, u_busy)] {
            if fd < 0 {
                continue;
            }
            if busy {
                let b = if fixed {
                    types::CancelBuilder::fd(types::Fixed(fd as u32))
                } else {
                    types::CancelBuilder::fd(types::Fd(fd))
                };
                self.push_conn(idx, OP_CANCEL, opcode::AsyncCancel2::new(b.all()).build());
            }
            let e = on_fd!(fixed, fd, |t| opcode::Close::new(t).build());
            self.push_conn(idx, OP_CLOSE, e);
        }
        let c = &mut self.conns[idx];
        c.c = -1;
        c.u = -1;
        self.maybe_free(idx);
    }

    fn maybe_free(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        if c.closing && c.pending == 0 && c.live {
            c.live = false;
            self.free.push(idx);
        }
    }

    fn new_conn(&mut self, fd: i32) {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(Conn::new());
                self.conns.len() - 1
            }
        };
        let c = &mut self.conns[idx];
        c.live = true;
        c.closing = false;
        c.c = fd;
        c.u = -1;
        c.c_multi = false;
        c.u_multi = false;
        c.state = St::Idle;
        c.cin.clear();
        c.uin.clear();
        c.close_after = false;
        self.arm_client_recv(idx);
    }

    fn complete(&mut self, user_data: u64, res: i32, flags: u32) {
        let op = user_data & 0xff;
        if op == OP_ACCEPT {
            if res >= 0 {
                self.new_conn(res);
            }
            if !self.tune.accept_multi || !cqueue::more(flags) {
                self.arm_accept();
            }
            return;
        }
        let idx = (user_data >> 8) as usize;
        let more = cqueue::more(flags);
        {
            let c = &mut self.conns[idx];
            if !more {
                c.pending -= 1;
                match op {
                    OP_CRECV | OP_CSEND => c.c_ops -= 1,
                    OP_UCONNECT | OP_USEND | OP_URECV => c.u_ops -= 1,
                    _ => {}
                }
                if op == OP_CRECV {
                    c.c_multi = false;
                } else if op == OP_URECV {
                    c.u_multi = false;
                }
            }
        }
        if self.conns[idx].closing {
            if res >= 0 {
                if op == OP_USOCKET {
                    // Opened after the connection closed: close it too.
                    let e = on_fd!(self.tune.fixed, res, |t| opcode::Close::new(t).build());
                    self.push_conn(idx, OP_CLOSE, e);
                } else if let Some(bid) = cqueue::buffer_select(flags) {
                    let br = self.bufring.as_mut().expect("buffer ring");
                    br.put(bid);
                    self.returned = true;
                }
            }
            self.maybe_free(idx);
            return;
        }
        match op {
            OP_CRECV => {
                if res == -libc::ENOBUFS {
                    self.arm_client_recv(idx); // ring ran dry: arm again
                    return;
                }
                if res <= 0 || !self.take(idx, false, res, flags) {
                    self.close(idx);
                    return;
                }
                if self.conns[idx].state == St::Idle {
                    self.try_request(idx);
                }
            }
            OP_URECV => {
                if res == -libc::ENOBUFS {
                    self.arm_upstream_recv(idx);
                    return;
                }
                if res <= 0 || !self.take(idx, true, res, flags) {
                    self.close(idx);
                    return;
                }
                if self.conns[idx].state == St::Upstream && (!more || self.tune.up_multi) {
                    // Multishot: the connection may still be sending the request; a
                    // response before that is the backend's business, relayed all the same.
                    self.try_response(idx);
                }
            }
            OP_USOCKET => {
                if res < 0 {
                    self.close(idx);
                    return;
                }
                self.conns[idx].u = res;
                self.connect_upstream(idx);
            }
            OP_UCONNECT => {
                if res < 0 {
                    self.close(idx);
                    return;
                }
                self.send_upstream(idx);
            }
            OP_USEND => {
                if res <= 0 {
                    self.close(idx);
                    return;
                }
                let c = &mut self.conns[idx];
                c.sent += res as usize;
                if c.sent < c.msg_len {
                    self.send_upstream(idx);
                    return;
                }
                let n = c.msg_len;
                c.cin.drain(..n);
                if !self.tune.poll_first {
                    self.arm_upstream_recv(idx);
                }
            }
            OP_CSEND => {
                if res <= 0 {
                    self.close(idx);
                    return;
                }
                let c = &mut self.conns[idx];
                c.sent += res as usize;
                if c.sent < c.msg_len {
                    self.send_client(idx);
                    return;
                }
                let n = c.msg_len;
                c.uin.drain(..n);
                c.state = St::Idle;
                if c.close_after {
                    self.close(idx);
                } else {
                    self.try_request(idx);
                }
            }
            _ => {}
        }
    }

    /// One io_uring_enter: submit what is queued and wait for at least one completion.
    fn submit_and_wait(&mut self) -> io::Result<()> {
        if self.ring_index < 0 {
            return self.ring.submit_and_wait(1).map(drop);
        }
        let to_submit = self.ring.submission().len() as libc::c_uint;
        // SAFETY: io_uring_enter on our registered ring index with no argument struct; the
        // queued SQEs were published to the shared tail when their push's queue handle dropped.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                self.ring_index,
                to_submit,
                1 as libc::c_uint,
                IORING_ENTER_GETEVENTS | IORING_ENTER_REGISTERED_RING,
                std::ptr::null::<libc::c_void>(),
                0usize,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn run(&mut self) -> io::Result<()> {
        self.arm_accept();
        let mut batch: Vec<(u64, i32, u32)> = Vec::with_capacity(CQ_ENTRIES as usize);
        loop {
            if self.returned {
                self.bufring.as_ref().expect("buffer ring").publish();
                self.returned = false;
            }
            match self.submit_and_wait() {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
            batch.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for (u, r, f) in batch.drain(..) {
                self.complete(u, r, f);
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: ringfloor LISTEN BACKEND (plain|tuned)[(+|-)SWITCH]...\n(a measuring instrument for loadtest/, not a proxy to use)");
        std::process::exit(2);
    }
    let tune = Tune::parse(&args[3]).unwrap_or_else(|e| {
        eprintln!("ringfloor: {e}");
        std::process::exit(2);
    });
    let backend: SocketAddr = args[2].parse().unwrap_or_else(|e| {
        eprintln!("ringfloor: backend {}: {e}", args[2]);
        std::process::exit(2);
    });
    let SocketAddr::V4(b4) = backend else {
        eprintln!("ringfloor: backend must be IPv4");
        std::process::exit(2);
    };
    if let Err(e) = serve(&args[1], b4, tune) {
        eprintln!("ringfloor: {e}");
        std::process::exit(1);
    }
}

fn serve(listen: &str, b4: std::net::SocketAddrV4, tune: Tune) -> io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    let mut builder = IoUring::builder();
    builder.setup_cqsize(CQ_ENTRIES);
    if tune.taskrun {
        builder
            .setup_coop_taskrun()
            .setup_single_issuer()
            .setup_defer_taskrun();
    }
    let ring = builder.build(SQ_ENTRIES)?;
    let ring_index = if tune.ring_fd {
        register_ring_fd(&ring)?
    } else {
        -1
    };
    if tune.fixed {
        ring.submitter().register_files_sparse(FIXED_FILES)?;
    }
    let bufring = if tune.recv_multi {
        Some(BufRing::new(&ring)?)
    } else {
        None
    };
    let backend = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: b4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*b4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    eprintln!("ringfloor: {listen} -> {b4}, {tune:?}");
    let mut srv = Server {
        ring,
        tune,
        listener: listener.as_raw_fd(),
        backend,
        conns: Vec::new(),
        free: Vec::new(),
        bufring,
        returned: false,
        ring_index,
        pool: Vec::new(),
    };
    srv.run()
}

/// Register the ring's own fd (the crate remembers it only inside one `Submitter`, and
/// `IoUring::submitter()` makes a new one per call), returning its index for io_uring_enter.
fn register_ring_fd(ring: &IoUring) -> io::Result<i32> {
    #[repr(C)]
    struct RsrcUpdate {
        offset: u32,
        resv: u32,
        data: u64,
    }
    let mut up = RsrcUpdate {
        offset: u32::MAX, // let the kernel pick the slot
        resv: 0,
        data: ring.as_raw_fd() as u64,
    };
    // SAFETY: io_uring_register with one io_uring_rsrc_update (same layout) that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring.as_raw_fd(),
            IORING_REGISTER_RING_FDS,
            &mut up as *mut RsrcUpdate,
            1 as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(up.offset as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_to_their_switches() {
        let p = Tune::parse("plain").unwrap();
        assert!(p.taskrun && !p.recv_multi && !p.fixed && !p.accept_multi);
        let t = Tune::parse("tuned").unwrap();
        assert!(t.accept_multi && t.recv_multi && t.up_multi && t.fixed && t.ring_fd);
        let one = Tune::parse("plain+fixed").unwrap();
        assert!(one.fixed && !one.recv_multi);
        let up = Tune::parse("plain+upmulti").unwrap();
        assert!(
            up.up_multi && up.recv_multi,
            "upmulti brings the buffer ring"
        );
        let less = Tune::parse("tuned-fixed-ringfd").unwrap();
        assert!(!less.fixed && !less.ring_fd && less.recv_multi);
        assert!(!Tune::parse("plain-taskrun").unwrap().taskrun);
        assert!(Tune::parse("plainfixed").is_err());
        assert!(Tune::parse("plain+bogus").is_err());
        assert!(Tune::parse("fast").is_err());
    }

    #[test]
    fn heads_and_lengths_are_found() {
        let r = b"HTTP/1.1 200 OK\r\nServer: x\r\ncontent-length: 12\r\n\r\nhello world\n";
        let end = head_end(r).unwrap();
        assert_eq!(&r[end..], b"hello world\n");
        assert_eq!(
            header(&r[..end], b"Content-Length").and_then(parse_len),
            Some(12)
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        let q = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        assert_eq!(header_line(q, b"connection"), Some((25, 44)));
        assert_eq!(header_line(q, b"conn"), None);
        assert_eq!(
            header(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"content-length"),
            None
        );
    }
}
