//! Idle deadlines of parked connections, kept by one coarse clock per worker instead of a
//! timer each: a monoio timer entry is 512 bytes, more than the rest of a parked connection.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often the clock looks for expired deadlines: an idle timeout may end this much late.
pub const TICK: Duration = Duration::from_millis(250);

#[derive(Default)]
pub struct IdleClock {
    /// One per live deadline; freed slots are reused, so memory follows parked connections.
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
    live: Cell<usize>,
    /// Whether the sweeping task runs (only while some deadline is live).
    ticking: Cell<bool>,
}

#[derive(Default)]
struct Slot {
    at: Option<Instant>,
    expired: bool,
    waker: Option<Waker>,
}

impl IdleClock {
    /// A future that completes at `at` (up to `TICK` late).
    pub fn deadline(self: &Rc<Self>, at: Instant) -> Deadline {
        let slot = match self.free.borrow_mut().pop() {
            Some(i) => i,
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(Slot::default());
                slots.len() - 1
            }
        };
        self.slots.borrow_mut()[slot] = Slot {
            at: Some(at),
            expired: false,
            waker: None,
        };
        self.live.set(self.live.get() + 1);
        if !self.ticking.replace(true) {
            monoio::spawn(tick(self.clone()));
        }
        Deadline {
            clock: self.clone(),
            slot,
        }
    }

    /// Marks every deadline at or before `now` expired and wakes its task.
    fn sweep(&self, now: Instant) {
        for s in self.slots.borrow_mut().iter_mut() {
            if !s.expired && s.at.is_some_and(|at| at <= now) {
                s.expired = true;
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            }
        }
    }
}

async fn tick(clock: Rc<IdleClock>) {
    loop {
        monoio::time::sleep(TICK).await;
        if clock.live.get() == 0 {
            clock.ticking.set(false);
            return;
        }
        clock.sweep(Instant::now());
    }
}

pub struct Deadline {
    clock: Rc<IdleClock>,
    slot: usize,
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut slots = self.clock.slots.borrow_mut();
        let slot = &mut slots[self.slot];
        if slot.expired {
            return Poll::Ready(());
        }
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            slot.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.clock.slots.borrow_mut()[self.slot] = Slot::default();
        self.clock.free.borrow_mut().push(self.slot);
        self.clock.live.set(self.clock.live.get() - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_completes_only_once_swept_past_and_its_slot_is_reused() {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(async {
                let clock = Rc::new(IdleClock::default());
                let t0 = Instant::now();
                let mut d = Box::pin(clock.deadline(t0 + Duration::from_secs(5)));
                let mut cx = Context::from_waker(Waker::noop());
                assert!(d.as_mut().poll(&mut cx).is_pending());
                clock.sweep(t0 + Duration::from_secs(4));
                assert!(d.as_mut().poll(&mut cx).is_pending());
                clock.sweep(t0 + Duration::from_secs(5));
                assert!(d.as_mut().poll(&mut cx).is_ready());
                drop(d);
                assert_eq!(clock.live.get(), 0);
                let d = clock.deadline(t0);
                assert_eq!(d.slot, 0, "a freed slot is reused");
            });
    }
}
