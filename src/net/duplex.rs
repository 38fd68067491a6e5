//! In-memory byte stream pairs within one worker: what a WebSocket over HTTP/2 uses as a byte
//! stream, on the client side (an extended CONNECT handed to the HTTP/1 data path as if it were
//! a client connection, `http2::stream`) and on the target side (`http2::tunnel`), without a
//! socket pair's system calls. Other HTTP/2 streams enter the data path directly
//! (`http2::down`). Each direction holds at most `CAPACITY` bytes: a writer waits while it is
//! full, as on a socket, so bodies keep their back-pressure.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::BufResult;

/// Bytes one direction buffers before its writer waits (a small socket buffer's worth).
pub const CAPACITY: usize = 64 * 1024;

/// Bytes on their way to one side.
#[derive(Default)]
struct Flow {
    buf: Vec<u8>,
    pos: usize,
    /// The writer shut down or went away: after `buf`, end of stream.
    eof: bool,
    /// The reader went away: writes fail.
    gone: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Flow {
    fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn wake_reader(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

/// `flows[i]`: the bytes flowing to side `i`.
type Shared = Rc<RefCell<[Flow; 2]>>;

/// One side of a pair, or a half of it (`reads` / `writes` say which directions it owns; a
/// direction is closed when its owner drops).
pub struct End {
    shared: Shared,
    side: usize,
    reads: bool,
    writes: bool,
}

/// A connected pair.
pub fn pair() -> (End, End) {
    let shared: Shared = Rc::new(RefCell::new(Default::default()));
    let end = |side| End {
        shared: shared.clone(),
        side,
        reads: true,
        writes: true,
    };
    (end(0), end(1))
}

impl End {
    /// Splits into a reading and a writing half.
    pub fn split(mut self) -> (End, End) {
        let read = End {
            shared: self.shared.clone(),
            side: self.side,
            reads: true,
            writes: false,
        };
        let write = End {
            shared: self.shared.clone(),
            side: self.side,
            reads: false,
            writes: true,
        };
        // `self` owns nothing any more: its drop closes nothing.
        self.reads = false;
        self.writes = false;
        (read, write)
    }

    /// Reads into the spare capacity of `buf` (growing its length); `Ok(0)` at end of stream.
    pub async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        poll_fn(|cx| {
            let room = buf.capacity() - buf.len();
            self.poll_take(cx, room, |b| buf.extend_from_slice(b))
        })
        .await
    }

    /// Hands up to `room` pending bytes to `copy`; `Ok(0)` at end of stream (or for no room).
    fn poll_take(
        &self,
        cx: &mut Context<'_>,
        room: usize,
        copy: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<usize>> {
        let mut flows = self.shared.borrow_mut();
        let flow = &mut flows[self.side];
        if flow.pending() > 0 && room > 0 {
            let n = flow.pending().min(room);
            copy(&flow.buf[flow.pos..flow.pos + n]);
            flow.pos += n;
            if flow.pos == flow.buf.len() {
                flow.buf.clear();
                flow.pos = 0;
            }
            flow.wake_writer();
            return Poll::Ready(Ok(n));
        }
        if flow.eof || room == 0 {
            return Poll::Ready(Ok(0));
        }
        flow.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Writes all of `data`, waiting while the direction is full.
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = poll_fn(|cx| self.poll_put(cx, data)).await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Takes as much of `data` as the direction has room for (at least one byte).
    fn poll_put(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut flows = self.shared.borrow_mut();
        let flow = &mut flows[1 - self.side];
        if flow.gone {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        }
        let room = CAPACITY.saturating_sub(flow.pending());
        if room == 0 {
            flow.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if flow.pos > 0 && flow.pos >= flow.buf.len() / 2 {
            flow.buf.drain(..flow.pos);
            flow.pos = 0;
        }
        let n = room.min(data.len());
        flow.buf.extend_from_slice(&data[..n]);
        flow.wake_reader();
        Poll::Ready(Ok(n))
    }

    /// Ends this side's writing: the other side reads to the end, then end of stream.
    pub fn shutdown(&mut self) {
        let mut flows = self.shared.borrow_mut();
        let flow = &mut flows[1 - self.side];
        flow.eof = true;
        flow.wake_reader();
    }
}

// The owned-buffer I/O traits, so an upgraded HTTP/2 stream (WebSocket over extended CONNECT)
// runs through the same tunnel relay as a socket (`l4::upgrade`). Vectored I/O is not offered:
// the relay reads and writes single buffers.
impl AsyncReadRent for End {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let room = buf.bytes_total();
        let dst = buf.write_ptr();
        let res = poll_fn(|cx| {
            self.poll_take(cx, room, |b| {
                // SAFETY: `dst` has room for `bytes_total()` bytes and `b` is at most that long;
                // `b` is the pair's own buffer, which cannot overlap the caller's.
                unsafe { dst.copy_from_nonoverlapping(b.as_ptr(), b.len()) }
            })
        })
        .await;
        if let Ok(n) = res {
            // SAFETY: the first `n` bytes were just written above.
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        (Err(io::ErrorKind::Unsupported.into()), buf)
    }
}

impl AsyncWriteRent for End {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: an `IoBuf` holds `bytes_init()` initialised bytes at `read_ptr()`, and the
        // caller cannot touch them while we own `buf`.
        let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        if data.is_empty() {
            return (Ok(0), buf);
        }
        let res = poll_fn(|cx| self.poll_put(cx, data)).await;
        (res, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        (Err(io::ErrorKind::Unsupported.into()), buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        End::shutdown(self);
        Ok(())
    }
}

// SAFETY: reads and writes of one end touch different directions of the pair, and each poll
// borrows the shared state only for its own duration, so halves may run concurrently.
unsafe impl Split for End {}

impl Drop for End {
    fn drop(&mut self) {
        if self.writes {
            self.shutdown();
        }
        if self.reads {
            let mut flows = self.shared.borrow_mut();
            let flow = &mut flows[self.side];
            flow.gone = true;
            flow.buf = Vec::new();
            flow.pos = 0;
            flow.wake_writer();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn bytes_cross_in_order_and_a_shutdown_reads_as_the_end() {
        run(async {
            let (mut a, mut b) = pair();
            a.write_all(b"hello ").await.unwrap();
            a.write_all(b"world").await.unwrap();
            a.shutdown();
            let mut got = Vec::with_capacity(64);
            while b.read_more(&mut got).await.unwrap() > 0 {}
            assert_eq!(got, b"hello world");
            // The other direction is still open.
            b.write_all(b"back").await.unwrap();
            let mut back = Vec::with_capacity(8);
            assert_eq!(a.read_more(&mut back).await.unwrap(), 4);
        });
    }

    #[test]
    fn a_full_direction_makes_the_writer_wait_until_the_reader_drains_it() {
        run(async {
            let (mut a, mut b) = pair();
            let big = vec![7u8; CAPACITY * 3 + 5];
            let writer = monoio::spawn(async move {
                a.write_all(&big).await.unwrap();
                a
            });
            let mut got = Vec::with_capacity(1024);
            let mut total = 0;
            while total < CAPACITY * 3 + 5 {
                got.clear();
                let n = b.read_more(&mut got).await.unwrap();
                assert!(n > 0 && n <= 1024);
                total += n;
            }
            let _a = writer.await;
        });
    }

    #[test]
    fn writing_to_a_dropped_reader_fails_and_a_dropped_writer_reads_as_the_end() {
        run(async {
            let (mut a, b) = pair();
            let (r, w) = b.split();
            drop(r);
            let e = a.write_all(b"x").await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
            drop(w);
            let mut buf = Vec::with_capacity(8);
            assert_eq!(a.read_more(&mut buf).await.unwrap(), 0);
        });
    }
}
