//! Happy eyeballs (RFC 8305) over the addresses of one hostname target
//! (`transport.dial_fallback_delay`): the first address is dialed, the next one
//! `dial_fallback_delay` later (at once if every attempt so far failed), and so on; the first
//! connection up wins and the others are dropped, which cancels their connects. A negative
//! delay dials one address at a time, as Go's dialer does then.
//!
//! The order and the schedule are pure functions; `race` and `one_by_one` only run them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Go's floor for one address's share of the dial timeout when dialing one by one: a share
/// much shorter than a round trip would fail live addresses.
const MIN_ATTEMPT: Duration = Duration::from_secs(2);

/// RFC 8305 §4: IPv6 first, then the families alternate (First Address Family Count 1);
/// within a family the resolver's order is kept.
pub fn order(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let (v6, v4): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.iter().partition(|a| a.is_ipv6());
    let mut out = Vec::with_capacity(addrs.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// What the race does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Start the next address now.
    Start,
    /// Start it after this long, unless an attempt finishes first.
    After(Duration),
    /// Every address has been started: wait for the attempts in flight.
    Wait,
}

/// RFC 8305 §5: `started` of `total` addresses are dialed, `in_flight` of them still
/// connecting, the last one started `since_last` ago.
pub fn next_step(
    started: usize,
    total: usize,
    in_flight: usize,
    since_last: Duration,
    delay: Duration,
) -> Next {
    if started >= total {
        Next::Wait
    } else if started == 0 || in_flight == 0 || since_last >= delay {
        Next::Start
    } else {
        Next::After(delay - since_last)
    }
}

/// One address's time when dialing one by one (Go's `partialDeadline`): an equal share of
/// what is left of the dial timeout, at least `MIN_ATTEMPT`, never more than what is left.
pub fn attempt_limit(left: Option<Duration>, addrs_left: usize) -> Option<Duration> {
    let left = left?;
    let share = left / addrs_left.max(1) as u32;
    Some(share.max(MIN_ATTEMPT).min(left))
}

type Attempt<'a, S> = Pin<Box<dyn Future<Output = io::Result<S>> + 'a>>;

/// Races `connect` over `addrs` (already in `order`) with `delay` between starts; the winner
/// and its address, or the last failure once every address failed.
pub async fn race<'a, S, F, Fut>(
    addrs: &[SocketAddr],
    delay: Duration,
    connect: F,
) -> io::Result<(S, SocketAddr)>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<S>> + 'a,
{
    let mut attempts: Vec<Option<Attempt<'a, S>>> = Vec::with_capacity(addrs.len());
    let mut last_start = Instant::now();
    let mut timer: Option<Pin<Box<monoio::time::Sleep>>> = None;
    let mut last_err = None;
    std::future::poll_fn(|cx| loop {
        let in_flight = attempts.iter().filter(|a| a.is_some()).count();
        let step = next_step(
            attempts.len(),
            addrs.len(),
            in_flight,
            last_start.elapsed(),
            delay,
        );
        match step {
            Next::Start => {
                attempts.push(Some(Box::pin(connect(addrs[attempts.len()]))));
                last_start = Instant::now();
                timer = None;
                continue;
            }
            Next::After(d) => {
                let t = timer.get_or_insert_with(|| Box::pin(monoio::time::sleep(d)));
                if t.as_mut().poll(cx).is_ready() {
                    timer = None;
                    continue;
                }
            }
            Next::Wait if in_flight == 0 => {
                return Poll::Ready(Err(last_err
                    .take()
                    .unwrap_or_else(|| io::Error::other("no address to dial"))));
            }
            Next::Wait => {}
        }
        let mut failed = false;
        for (i, slot) in attempts.iter_mut().enumerate() {
            let Some(f) = slot else { continue };
            if let Poll::Ready(res) = f.as_mut().poll(cx) {
                match res {
                    Ok(s) => return Poll::Ready(Ok((s, addrs[i]))),
                    Err(e) => {
                        last_err = Some(e);
                        *slot = None;
                        failed = true;
                    }
                }
            }
        }
        if !failed {
            return Poll::Pending;
        }
    })
    .await
}

/// Dials `addrs` one at a time, each within its share of `timeout` (`attempt_limit`).
pub async fn one_by_one<S, F, Fut>(
    addrs: &[SocketAddr],
    timeout: Option<Duration>,
    connect: F,
) -> io::Result<(S, SocketAddr)>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<S>>,
{
    let start = Instant::now();
    let mut last_err = io::Error::other("no address to dial");
    for (i, &addr) in addrs.iter().enumerate() {
        let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
        let attempt = connect(addr);
        let res = match attempt_limit(left, addrs.len() - i) {
            Some(limit) => match monoio::time::timeout(limit, attempt).await {
                Ok(res) => res,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                )),
            },
            None => attempt.await,
        };
        match res {
            Ok(s) => return Ok((s, addr)),
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn addresses_are_ordered_ipv6_first_then_alternating_families() {
        for (given, want) in [
            (vec!["10.0.0.1:80"], vec!["10.0.0.1:80"]),
            (
                vec!["10.0.0.1:80", "10.0.0.2:80", "[::1]:80"],
                vec!["[::1]:80", "10.0.0.1:80", "10.0.0.2:80"],
            ),
            (
                vec![
                    "10.0.0.1:80",
                    "[::2]:80",
                    "10.0.0.2:80",
                    "[::3]:80",
                    "[::4]:80",
                ],
                vec![
                    "[::2]:80",
                    "10.0.0.1:80",
                    "[::3]:80",
                    "10.0.0.2:80",
                    "[::4]:80",
                ],
            ),
            (
                vec!["127.0.0.2:80", "127.0.0.3:80"],
                vec!["127.0.0.2:80", "127.0.0.3:80"],
            ),
        ] {
            assert_eq!(order(&addrs(&given)), addrs(&want), "{given:?}");
        }
    }

    #[test]
    fn the_next_address_starts_after_the_delay_or_as_soon_as_all_attempts_failed() {
        let ms = Duration::from_millis;
        let d = ms(300);
        for (started, total, in_flight, since, want) in [
            (0, 3, 0, ms(0), Next::Start),
            (1, 3, 1, ms(0), Next::After(ms(300))),
            (1, 3, 1, ms(120), Next::After(ms(180))),
            (1, 3, 1, ms(300), Next::Start),
            (1, 3, 0, ms(5), Next::Start),
            (2, 3, 1, ms(10), Next::After(ms(290))),
            (3, 3, 2, ms(900), Next::Wait),
            (3, 3, 0, ms(900), Next::Wait),
            (1, 1, 1, ms(900), Next::Wait),
        ] {
            assert_eq!(
                next_step(started, total, in_flight, since, d),
                want,
                "{started}/{total} in flight {in_flight} since {since:?}"
            );
        }
    }

    #[test]
    fn one_by_one_splits_the_dial_timeout_as_go_does() {
        let s = Duration::from_secs;
        for (left, n, want) in [
            (None, 3, None),
            (Some(s(9)), 3, Some(s(3))),
            (Some(s(3)), 3, Some(s(2))),
            (Some(s(1)), 3, Some(s(1))),
            (Some(s(10)), 1, Some(s(10))),
        ] {
            assert_eq!(attempt_limit(left, n), want, "{left:?} over {n}");
        }
    }
}
