//! A request's handler future, as the route layer runs it: each poll with the request as the
//! thread's current one (logs, outgoing calls) and tagged for the stall watchdog.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::request_context::{RequestContext, enter};
use super::watchdog::Watchdog;

pin_project_lite::pin_project! {
    /// A request's handler future: every poll runs with the request as this thread's
    /// [`current`](super::request_context::current) one, and tells the watchdog (when there is one) which request the poll
    /// belongs to.
    pub struct InRequest<F> {
        #[pin]
        inner: F,
        context: Arc<RequestContext>,
        watchdog: Option<&'static Watchdog>,
    }
}

impl<F> InRequest<F> {
    pub fn new(
        inner: F,
        context: Arc<RequestContext>,
        watchdog: Option<&'static Watchdog>,
    ) -> Self {
        Self {
            inner,
            context,
            watchdog,
        }
    }
}

impl<F: Future> Future for InRequest<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if let Some(watchdog) = this.watchdog {
            watchdog.tag_current_poll(this.context);
        }
        let _entered = enter(Some(Arc::clone(this.context)));
        this.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_context::tests::{current_id, sample};

    #[tokio::test]
    async fn the_context_is_set_during_each_poll_only() {
        let context = sample("polled");
        let seen = InRequest::new(
            async {
                let first = current_id();
                tokio::task::yield_now().await;
                (first, current_id())
            },
            context,
            None,
        )
        .await;
        assert_eq!(
            seen,
            (Some("polled".into()), Some("polled".into())),
            "both polls"
        );
        assert_eq!(current_id(), None, "not after the poll");
    }
}
