//! A read that gives up when nothing arrives for a while without losing what raced the give-up
//! (a leaf: `stream` and `tls_stream` both use it).

use std::io;

use monoio::io::Canceller;

/// Runs a cancellable read until `quiet` completes first; then cancels it and waits for its
/// completion: `None` if it was cancelled, else what it read (bytes that raced the cancel).
/// `quiet` may be a deadline of the worker's idle clock (no timer entry of its own).
pub(crate) async fn read_until<B>(
    read: impl std::future::Future<Output = monoio::BufResult<usize, B>>,
    mut quiet: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    canceller: &mut Canceller,
) -> (Option<io::Result<usize>>, B) {
    use std::task::Poll;
    let mut read = std::pin::pin!(read);
    let first = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = read.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        quiet.as_mut().poll(cx).map(|()| None)
    })
    .await;
    if let Some((res, buf)) = first {
        return (Some(res), buf);
    }
    *canceller = std::mem::take(canceller).cancel();
    let (res, buf) = read.await;
    match res {
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => (None, buf),
        res => (Some(res), buf),
    }
}
