//! A worker's spare scratch buffers (upstream receive buffer, heads written), shared by its
//! connections: a request takes them and gives them back when done, so a keep-alive burst
//! allocates nothing per request, and a connection between requests holds none of them. A
//! worker that turns quiet lets them go (`worker::trim`).

use std::cell::{Cell, RefCell};

/// Buffers kept: enough for the requests a worker has in flight at once, two each (h2-tls
/// keeps 160 HTTP/2 streams in flight: 64 spares cost it 1.2% more instructions than 512);
/// beyond, they are freed. At most 8 MiB, and only what a burst already allocated: a worker
/// that turns quiet frees them (`worker::trim`).
const SPARE_MAX: usize = 512;

/// Largest buffer kept: one that grew for a large head or body is freed instead.
const SPARE_CAP: usize = 16 * 1024;

/// Smallest buffer kept: every spare must serve as any request's head buffer (`OUT_BUF`)
/// without growing; smaller ones stay with their connection.
pub const SPARE_MIN: usize = 4096;

#[derive(Default)]
pub struct Buffers {
    spare: RefCell<Vec<Vec<u8>>>,
    /// Buffers taken so far: about one per request, so it also tells whether a worker is busy.
    taken: Cell<u64>,
}

impl Buffers {
    /// An empty buffer, with the capacity of a returned one when there is one.
    pub fn take(&self) -> Vec<u8> {
        self.taken.set(self.taken.get() + 1);
        self.spare.borrow_mut().pop().unwrap_or_default()
    }

    /// How many buffers were taken so far.
    pub fn taken(&self) -> u64 {
        self.taken.get()
    }

    /// Frees every spare (a quiet worker's).
    pub fn release(&self) {
        *self.spare.borrow_mut() = Vec::new();
    }

    /// Takes `buf` back (emptied) unless it is undersized, oversized, or the pool is full.
    pub fn give(&self, mut buf: Vec<u8>) {
        if !keeps(buf.capacity(), self.spare.borrow().len()) {
            return;
        }
        buf.clear();
        self.spare.borrow_mut().push(buf);
    }
}

/// Whether a buffer of `capacity` joins a pool holding `held`.
fn keeps(capacity: usize, held: usize) -> bool {
    (SPARE_MIN..=SPARE_CAP).contains(&capacity) && held < SPARE_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allocated_buffers_of_moderate_size_are_kept_and_only_up_to_the_bound() {
        let cases = [
            (0, 0, false),
            (SPARE_MIN - 1, 0, false),
            (4096, 0, true),
            (SPARE_CAP, SPARE_MAX - 1, true),
            (SPARE_CAP + 1, 0, false),
            (4096, SPARE_MAX, false),
        ];
        for (capacity, held, want) in cases {
            assert_eq!(keeps(capacity, held), want, "{capacity} bytes, {held} held");
        }
    }

    #[test]
    fn a_returned_buffer_is_handed_out_again_empty() {
        let pool = Buffers::default();
        let mut b = Vec::with_capacity(4096);
        b.extend_from_slice(b"used");
        let at = b.as_ptr();
        pool.give(b);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at);
        assert_eq!(pool.take().capacity(), 0, "nothing spare left");
        assert_eq!(pool.taken(), 2);
    }

    #[test]
    fn a_released_pool_holds_nothing() {
        let pool = Buffers::default();
        pool.give(Vec::with_capacity(4096));
        pool.release();
        assert_eq!(pool.take().capacity(), 0);
    }
}
