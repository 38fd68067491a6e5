//! The pure decisions of failover, apart from the I/O that feeds them: whether another attempt
//! is allowed, whether a failed exchange is replayed or moved to another target, and which
//! failures count against a target's passive health.

use std::time::Duration;

use crate::error::{ErrorKind, Side};

/// Whether another attempt may start, as Caddy decides it: `retries` bounds the attempts after
/// the first and `try_duration` the time spent trying; when both are set both limit (the first
/// reached stops), and `retries: 0` beside a `try_duration` means no count limit.
pub fn may_try_again(
    retries: u32,
    try_duration: Option<Duration>,
    attempts: u32,
    elapsed: Duration,
) -> bool {
    match (try_duration, retries) {
        (None, r) => attempts <= r,
        (Some(d), 0) => elapsed < d,
        (Some(d), r) => elapsed < d && attempts <= r,
    }
}

/// Whether a failure happened while opening the connection (dial, dial timeout, TLS
/// handshake): no byte of the request left, so any other target may take it.
pub fn is_connect_failure(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Dial(_) | ErrorKind::DialTimeout | ErrorKind::UpstreamTls(_)
    )
}

/// What the connector does after a connection to one target failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Another untried target, without spending an attempt.
    FailOver,
    /// Another target, spending an attempt.
    Next,
    /// Every target failed this round: pause `try_interval`, then try them all again.
    Wait,
    /// Answer with the failure.
    GiveUp,
}

/// After a failed connection: a failed dial or handshake always moves on to a target not yet
/// tried (so `targets: [live, dead]` never loses a request by default); once every target
/// failed, `retries` / `try_duration` decide whether to start another round.
pub fn after_connect_failure(
    connect_failure: bool,
    untried_left: bool,
    may_retry: bool,
) -> NextStep {
    match (connect_failure, untried_left, may_retry) {
        (true, true, _) => NextStep::FailOver,
        (false, true, true) => NextStep::Next,
        (_, false, true) => NextStep::Wait,
        (_, _, false) => NextStep::GiveUp,
    }
}

/// What a request allows on failure, fixed before the first attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request {
    /// All of the body is still in our buffer, so it can be sent again.
    pub body_buffered: bool,
    /// The method may be repeated without changing the outcome.
    pub idempotent: bool,
    /// `retry_methods` names the method.
    pub retry_method: bool,
}

/// How one exchange failed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Failed {
    /// The connection came out of the pool.
    pub reused: bool,
    /// The connection broke (reset or closed), as a stale pooled one does; not a timeout.
    pub broke: bool,
    /// Part of a response already reached the client.
    pub answered: bool,
    /// No byte of a response arrived from the upstream.
    pub before_response: bool,
    /// Nothing reached the upstream that it could have acted on.
    pub retry_safe: bool,
}

/// A pooled connection the upstream had already closed: replay once on a fresh connection to
/// the same target when nothing of the response arrived and the request is safe to repeat.
pub fn replay_on_fresh_connection(req: Request, f: Failed) -> bool {
    f.reused && f.broke && !f.answered && f.before_response && req.body_buffered && req.idempotent
}

/// RFC 9113 §8.7: a request an HTTP/2 target said it never processed (REFUSED_STREAM, a stream
/// past a graceful GOAWAY) goes once more even with `retries: 0`, as HTTP/2 clients do on their
/// own (Go's transport, so Caddy; hyper and reqwest); once only, as a target that refuses every
/// stream must not loop the request. `unprocessed`: the failure said so; `replayed`: this
/// request already had its free replay.
pub fn replay_unprocessed(f: Failed, unprocessed: bool, replayed: bool) -> bool {
    unprocessed && f.retry_safe && !f.answered && !replayed
}

/// Whether the request moves to another target: when the upstream cannot have acted on it, or
/// when `retry_methods` allows sending it again and no byte of a response came back.
pub fn try_another_target(req: Request, f: Failed) -> bool {
    !f.answered && (f.retry_safe || (req.retry_method && req.body_buffered && f.before_response))
}

/// Whether a failure left the request unanswered by the upstream: it could not be reached,
/// refused the handshake, or took the request and then hung, reset or closed before a response
/// head. Retries (`retry_methods`) and passive health both go by this one test, so every
/// failure class counts the same way for both.
pub fn failed_before_response(kind: &ErrorKind) -> bool {
    match kind {
        ErrorKind::Dial(_)
        | ErrorKind::DialTimeout
        | ErrorKind::UpstreamTls(_)
        | ErrorKind::UpstreamTimeout => true,
        ErrorKind::UpstreamIo {
            before_response, ..
        } => *before_response,
        _ => false,
    }
}

/// Whether a failure says the target is unwell (for passive health): it could not be reached,
/// refused the handshake, or took a request and then hung, reset or closed before answering.
/// A full target, a client's failure, or a failure after the response started says nothing.
pub fn counts_against_target(side: Side, kind: &ErrorKind, answered: bool) -> bool {
    side == Side::Upstream && !answered && failed_before_response(kind)
}

/// Whether a layer-4 tunnel counts against its target: the upstream failed or reset before it
/// sent a single byte (a refused service behind an open port). A clean close is an answer.
pub fn tunnel_counts_against_target(upstream_failed: bool, bytes_from_upstream: u64) -> bool {
    upstream_failed && bytes_from_upstream == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn retries_and_try_duration_both_limit_when_both_are_set() {
        // (retries, try_duration, attempts so far, elapsed, allowed)
        let table = [
            (0, None, 1, Duration::ZERO, false),
            (1, None, 1, Duration::ZERO, true),
            (1, None, 2, Duration::ZERO, false),
            (3, None, 3, 10 * S, true),
            // try_duration alone: no count limit.
            (0, Some(2 * S), 1, S, true),
            (0, Some(2 * S), 50, S, true),
            (0, Some(2 * S), 1, 2 * S, false),
            // Both: whichever runs out first stops.
            (5, Some(2 * S), 1, 2 * S, false),
            (2, Some(10 * S), 3, S, false),
            (2, Some(10 * S), 2, S, true),
        ];
        for (retries, dur, attempts, elapsed, want) in table {
            assert_eq!(
                may_try_again(retries, dur, attempts, elapsed),
                want,
                "retries {retries}, try_duration {dur:?}, attempts {attempts}, after {elapsed:?}"
            );
        }
    }

    #[test]
    fn a_failed_dial_moves_to_an_untried_target_whatever_the_retries() {
        use NextStep::*;
        // (connect failure, untried target left, retries/try_duration allow more, step)
        let table = [
            (true, true, false, FailOver),
            (true, true, true, FailOver),
            (true, false, true, Wait),
            (true, false, false, GiveUp),
            (false, true, true, Next),
            (false, true, false, GiveUp),
            (false, false, true, Wait),
            (false, false, false, GiveUp),
        ];
        for (dial, untried, may, want) in table {
            assert_eq!(
                after_connect_failure(dial, untried, may),
                want,
                "dial {dial}, untried {untried}, may retry {may}"
            );
        }
        let io = || io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(is_connect_failure(&ErrorKind::Dial(io())));
        assert!(is_connect_failure(&ErrorKind::DialTimeout));
        assert!(is_connect_failure(&ErrorKind::UpstreamTls("bad".into())));
        assert!(!is_connect_failure(&ErrorKind::UpstreamTimeout));
        assert!(!is_connect_failure(&ErrorKind::NoTarget));
    }

    #[test]
    fn only_a_stale_pooled_connection_with_a_repeatable_request_is_replayed_on_a_fresh_one() {
        let safe = Request {
            body_buffered: true,
            idempotent: true,
            retry_method: false,
        };
        let stale = Failed {
            reused: true,
            broke: true,
            answered: false,
            before_response: true,
            retry_safe: false,
        };
        let table = [
            (safe, stale, true),
            // A timeout is no stale connection: not replayed on the same target.
            (
                safe,
                Failed {
                    broke: false,
                    ..stale
                },
                false,
            ),
            (
                safe,
                Failed {
                    reused: false,
                    ..stale
                },
                false,
            ),
            (
                safe,
                Failed {
                    answered: true,
                    ..stale
                },
                false,
            ),
            (
                safe,
                Failed {
                    before_response: false,
                    ..stale
                },
                false,
            ),
            (
                Request {
                    body_buffered: false,
                    ..safe
                },
                stale,
                false,
            ),
            (
                Request {
                    idempotent: false,
                    ..safe
                },
                stale,
                false,
            ),
        ];
        for (i, (req, f, want)) in table.into_iter().enumerate() {
            assert_eq!(
                replay_on_fresh_connection(req, f),
                want,
                "row {i}: {req:?} {f:?}"
            );
        }
    }

    #[test]
    fn a_request_an_http2_target_never_processed_gets_one_free_replay() {
        let refused = Failed {
            before_response: true,
            retry_safe: true,
            ..Default::default()
        };
        // (failure, unprocessed, replayed before, replayed now)
        let table = [
            (refused, true, false, true),
            // Once only: a target refusing every stream must not loop the request.
            (refused, true, true, false),
            // Any other failure spends `retries` as before.
            (refused, false, false, false),
            (
                Failed {
                    retry_safe: false,
                    ..refused
                },
                true,
                false,
                false,
            ),
            (
                Failed {
                    answered: true,
                    ..refused
                },
                true,
                false,
                false,
            ),
        ];
        for (i, (f, unprocessed, replayed, want)) in table.into_iter().enumerate() {
            assert_eq!(
                replay_unprocessed(f, unprocessed, replayed),
                want,
                "row {i}: {f:?} unprocessed={unprocessed} replayed={replayed}"
            );
        }
    }

    #[test]
    fn another_target_is_tried_when_unsafe_to_repeat_only_if_retry_methods_allow_it() {
        let post = Request {
            body_buffered: true,
            idempotent: false,
            retry_method: false,
        };
        let get = Request {
            retry_method: true,
            idempotent: true,
            ..post
        };
        let unanswered = Failed {
            before_response: true,
            ..Default::default()
        };
        let table = [
            (
                post,
                Failed {
                    retry_safe: true,
                    ..Default::default()
                },
                true,
            ),
            (post, unanswered, false),
            (get, unanswered, true),
            (
                Request {
                    body_buffered: false,
                    ..get
                },
                unanswered,
                false,
            ),
            (
                get,
                Failed {
                    before_response: false,
                    ..unanswered
                },
                false,
            ),
            (
                get,
                Failed {
                    answered: true,
                    retry_safe: true,
                    ..unanswered
                },
                false,
            ),
        ];
        for (i, (req, f, want)) in table.into_iter().enumerate() {
            assert_eq!(try_another_target(req, f), want, "row {i}: {req:?} {f:?}");
        }
    }

    #[test]
    fn unreachable_hung_or_silently_closing_targets_count_against_their_health() {
        let io = || io::Error::from(io::ErrorKind::ConnectionReset);
        let up = Side::Upstream;
        let table = [
            (up, ErrorKind::Dial(io()), false, true),
            (up, ErrorKind::DialTimeout, false, true),
            (
                up,
                ErrorKind::UpstreamTls("unknown issuer".into()),
                false,
                true,
            ),
            (up, ErrorKind::UpstreamTimeout, false, true),
            (
                up,
                ErrorKind::UpstreamIo {
                    err: io(),
                    before_response: true,
                },
                false,
                true,
            ),
            (
                up,
                ErrorKind::UpstreamIo {
                    err: io(),
                    before_response: false,
                },
                false,
                false,
            ),
            (up, ErrorKind::UpstreamTimeout, true, false),
            (up, ErrorKind::NoTarget, false, false),
            (
                up,
                ErrorKind::UpstreamInvalid("malformed response head"),
                false,
                false,
            ),
            (Side::Downstream, ErrorKind::ClientIo(io()), false, false),
        ];
        for (side, kind, answered, want) in table {
            assert_eq!(
                counts_against_target(side, &kind, answered),
                want,
                "{side:?} {kind:?} answered {answered}"
            );
        }
    }

    #[test]
    fn every_failure_class_counts_the_same_for_retries_and_passive_health() {
        let io = || io::Error::from(io::ErrorKind::ConnectionReset);
        let get = Request {
            body_buffered: true,
            idempotent: true,
            retry_method: true,
        };
        let kinds = [
            ErrorKind::Dial(io()),
            ErrorKind::DialTimeout,
            ErrorKind::UpstreamTls("unknown issuer".into()),
            ErrorKind::UpstreamTimeout,
            ErrorKind::UpstreamIo {
                err: io(),
                before_response: true,
            },
            ErrorKind::UpstreamIo {
                err: io(),
                before_response: false,
            },
            ErrorKind::UpstreamInvalid("malformed response head"),
            ErrorKind::NoTarget,
        ];
        for kind in kinds {
            let failed = Failed {
                before_response: failed_before_response(&kind),
                ..Default::default()
            };
            assert_eq!(
                try_another_target(get, failed),
                counts_against_target(Side::Upstream, &kind, false),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_tunnel_counts_against_its_target_only_when_the_upstream_failed_before_any_byte() {
        let table = [(true, 0, true), (true, 5, false), (false, 0, false)];
        for (failed, bytes, want) in table {
            assert_eq!(
                tunnel_counts_against_target(failed, bytes),
                want,
                "{failed} {bytes}"
            );
        }
    }
}
