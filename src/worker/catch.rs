//! Keeping a panic inside one connection's task.

/// Ends one connection, not the worker, when its task panics. monoio-rustls keeps its I/O
/// buffers in `Option`s that are `expect`ed present; a TLS stream whose halves meet a protocol
/// error while the other half is mid-write (an upgraded tunnel) panics inside the library.
/// Requests in flight on that connection stay counted until shutdown_timeout.
pub struct CatchPanic<F: ?Sized>(pub std::pin::Pin<Box<F>>);

impl<F: std::future::Future<Output = ()> + ?Sized> std::future::Future for CatchPanic<F> {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll,
            Err(_) => {
                tracing::error!("a connection task panicked; that connection is closed");
                std::task::Poll::Ready(())
            }
        }
    }
}
