//! A one-shot, same-thread broadcast: "stop now". Accept loops and connection tasks select on
//! it so a worker can end every task it owns (closing their sockets) when it shuts down,
//! instead of leaving them pending in a dropped runtime.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Closer {
    closed: Cell<bool>,
    /// One slot per waiting task; freed slots are reused, so memory follows live tasks.
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Closer {
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Wakes every waiter; later waits complete at once.
    pub fn close(&self) {
        self.closed.set(true);
        for w in self.slots.borrow_mut().iter_mut().filter_map(Option::take) {
            w.wake();
        }
    }

    /// Completes once `close` has been called.
    pub fn wait(&self) -> Wait<'_> {
        let slot = match self.free.borrow_mut().pop() {
            Some(i) => i,
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(None);
                slots.len() - 1
            }
        };
        Wait { closer: self, slot }
    }
}

pub struct Wait<'a> {
    closer: &'a Closer,
    slot: usize,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.closer.closed.get() {
            return Poll::Ready(());
        }
        let mut slots = self.closer.slots.borrow_mut();
        let slot = &mut slots[self.slot];
        // A task polls this on every wake; store its waker only when it changed.
        if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *slot = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.closer.slots.borrow_mut()[self.slot] = None;
        self.closer.free.borrow_mut().push(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_completes_waits_and_slots_are_reused() {
        let c = Closer::default();
        let w = c.wait();
        assert_eq!(w.slot, 0);
        drop(w);
        let w = c.wait();
        assert_eq!(w.slot, 0, "a freed slot is reused");
        let mut w = Box::pin(w);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(w.as_mut().poll(&mut cx).is_pending());
        c.close();
        assert!(w.as_mut().poll(&mut cx).is_ready());
        assert!(c.is_closed());
    }
}
