//! Requests waiting for a connection slot when every target is at its `max_connections` (or
//! the upstream at its `transport.max_connections`): a FIFO per worker and upstream, bounded by
//! `transport.queue_timeout` (Caddy's `max_conns_per_host` waits the same way).
//!
//! Only the head of a queue polls the shared connection counters, every [`POLL`]; the others
//! sleep until they become the head. A slot freed by any worker is seen by that poll: the
//! workers share nothing but the counters' atomics, no lock and no cross-thread waker.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// How often the head of a queue looks for a freed slot: short next to any request, long next
/// to the few atomic loads a look costs.
pub const POLL: Duration = Duration::from_millis(1);

/// One FIFO per upstream, owned by one worker.
pub struct Queues {
    fifos: Vec<RefCell<Fifo>>,
}

#[derive(Default)]
struct Fifo {
    next: u64,
    /// Waiting tickets in arrival order, with the waker of each one's turn.
    waiting: VecDeque<(u64, Option<Waker>)>,
}

impl Queues {
    pub fn new(upstreams: usize) -> Queues {
        Queues {
            fifos: (0..upstreams).map(|_| RefCell::default()).collect(),
        }
    }

    /// Takes a place at the back of upstream `u`'s queue.
    pub fn join(&self, u: usize) -> Ticket<'_> {
        let fifo = &self.fifos[u];
        let mut f = fifo.borrow_mut();
        let id = f.next;
        f.next += 1;
        f.waiting.push_back((id, None));
        Ticket { fifo, id }
    }

    /// Requests waiting on upstream `u` (for tests).
    pub fn len(&self, u: usize) -> usize {
        self.fifos[u].borrow().waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fifos.iter().all(|f| f.borrow().waiting.is_empty())
    }
}

/// A place in a queue; leaving (drop) hands the turn to the next.
pub struct Ticket<'a> {
    fifo: &'a RefCell<Fifo>,
    id: u64,
}

impl Ticket<'_> {
    /// Resolves once this ticket is at the head of its queue.
    pub fn turn(&self) -> Turn<'_> {
        Turn { ticket: self }
    }
}

pub struct Turn<'a> {
    ticket: &'a Ticket<'a>,
}

impl Future for Turn<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut f = self.ticket.fifo.borrow_mut();
        match f
            .waiting
            .iter_mut()
            .position(|(id, _)| *id == self.ticket.id)
        {
            Some(0) | None => Poll::Ready(()),
            Some(i) => {
                f.waiting[i].1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut f = self.fifo.borrow_mut();
        let Some(i) = f.waiting.iter().position(|(id, _)| *id == self.id) else {
            return;
        };
        f.waiting.remove(i);
        if i == 0 {
            if let Some((_, Some(w))) = f.waiting.front_mut().map(|(id, w)| (*id, w.take())) {
                drop(f);
                w.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_go_in_arrival_order_and_a_leaving_head_wakes_the_next() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let order = rt.block_on(async {
            let q = Queues::new(1);
            let order = RefCell::new(Vec::new());
            let run = |name: &'static str, hold: u64| {
                let (q, order) = (&q, &order);
                async move {
                    let ticket = q.join(0);
                    ticket.turn().await;
                    order.borrow_mut().push(name);
                    monoio::time::sleep(Duration::from_millis(hold)).await;
                    drop(ticket);
                }
            };
            let a = run("a", 20);
            let b = run("b", 1);
            let c = run("c", 1);
            futures_join3(a, b, c).await;
            assert!(q.is_empty());
            order.into_inner()
        });
        assert_eq!(order, ["a", "b", "c"]);
    }

    /// Polls three futures to completion on one task.
    async fn futures_join3(
        a: impl Future<Output = ()>,
        b: impl Future<Output = ()>,
        c: impl Future<Output = ()>,
    ) {
        let (mut a, mut b, mut c) = (Box::pin(a), Box::pin(b), Box::pin(c));
        let (mut da, mut db, mut dc) = (false, false, false);
        std::future::poll_fn(|cx| {
            da = da || a.as_mut().poll(cx).is_ready();
            db = db || b.as_mut().poll(cx).is_ready();
            dc = dc || c.as_mut().poll(cx).is_ready();
            if da && db && dc {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}
