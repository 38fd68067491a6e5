//! Keeping a panic inside one connection's task.

/// Ends one connection, not the worker, when its task panics: a library's bug met by one
/// client's bytes (monoio-rustls's split halves once panicked this way) must not take the
/// worker's other connections with it. Requests in flight on that connection stay counted
/// until shutdown_timeout.
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

/// `Box::pin(make())`, with the future written straight into its heap memory: a connection's
/// or stream's future is several KiB (most of it the state of awaits not yet reached), and
/// building it on the stack to copy it into the box cost more than the rest of setting it up.
pub fn boxed<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    let mut slot = Box::<F>::new_uninit();
    slot.write(make());
    // SAFETY: `write` initialised the value.
    Box::into_pin(unsafe { slot.assume_init() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_future_boxed_in_place_runs_to_the_same_result_and_drops_its_state_once() {
        use std::rc::Rc;
        let state = Rc::new(());
        let held = state.clone();
        let fut = boxed(move || async move {
            monoio::time::sleep(std::time::Duration::from_millis(1)).await;
            Rc::strong_count(&held)
        });
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(fut), 2);
        assert_eq!(Rc::strong_count(&state), 1);
    }
}
