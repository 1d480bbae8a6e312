//! Which request the code running on this thread works for, without a `tracing` span per
//! request.
//!
//! A server span per request was most of the instrumentation's cost on a zero-work endpoint
//! (docs/benchmarks.md), so it is made only for an exporter. What logs, the watchdog and
//! outgoing calls need lives here: one [`RequestContext`] per request and a thread-local
//! pointer to it, set by `in_request::InRequest` for each poll (and [`enter`] on threads the
//! work moves to). Log lines print it, the same with or without an exporter.

use std::cell::RefCell;
use std::sync::Arc;

use super::span_ids::SpanIds;
use super::stall_log::StallCallback;

/// What the logs, the watchdog and outgoing calls know about one request.
pub struct RequestContext {
    /// `http.route`: the matched template, or `unmatched`.
    pub route: &'static str,
    /// `stallscope.variant`.
    pub variant: &'static str,
    /// `http.request.method`, bounded.
    pub method: &'static str,
    /// The request's path (logs print it), cut to [`MAX_PATH`] bytes.
    pub path: InlineText<MAX_PATH>,
    /// `x-request-id`: the client's, or one made for the request (printable ASCII).
    pub request_id: InlineText<MAX_REQUEST_ID>,
    /// The request's W3C ids: its server span's when one is exported, else made for it.
    pub ids: SpanIds,
    /// The caller's `tracestate`, passed on to outgoing calls when no span carries it.
    pub trace_state: Option<axum::http::HeaderValue>,
    /// Called once when the watchdog reports a stall of this request (it puts an event on the
    /// exported server span).
    pub on_stall: Option<StallCallback>,
}

impl RequestContext {
    pub fn request_id(&self) -> &str {
        self.request_id.as_str()
    }

    pub fn path(&self) -> &str {
        self.path.as_str()
    }
}

/// Longest path a context keeps (paths are client input); the span's `url.path` is cut the
/// same way.
pub const MAX_PATH: usize = 256;
/// Longest `x-request-id` taken from a client; a longer one is replaced by a made one.
pub const MAX_REQUEST_ID: usize = 64;

/// Up to `N` bytes of text, kept inline.
///
/// The context's path and id are copied into it rather than shared: sharing the request's
/// buffers (cloning its `Uri` and header value) turned each into a reference-counted
/// allocation of its own, two allocations and two atomic counts per request, where a copy of
/// a few dozen bytes is enough.
#[derive(Clone, Copy)]
pub struct InlineText<const N: usize> {
    len: usize,
    bytes: [u8; N],
}

impl<const N: usize> InlineText<N> {
    /// `text`, cut to at most `N` bytes on a character boundary.
    pub fn truncated(text: &str) -> Self {
        let mut len = text.len().min(N);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0; N];
        bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        Self { len, bytes }
    }

    pub fn as_str(&self) -> &str {
        // Always whole characters of a `str` (see `truncated`); the fallback cannot happen.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl<const N: usize> std::fmt::Debug for InlineText<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<RequestContext>>> = const { RefCell::new(None) };
}

/// The request this thread works for right now, if any.
pub fn current() -> Option<Arc<RequestContext>> {
    CURRENT
        .try_with(|current| current.try_borrow().ok().and_then(|c| c.clone()))
        .ok()
        .flatten()
}

/// Runs `f` with the request this thread works for, if any.
pub fn with_current<R>(f: impl FnOnce(Option<&RequestContext>) -> R) -> R {
    f(current().as_deref())
}

/// Makes `context` this thread's request until the guard drops; the previous one comes back
/// then. For work that leaves the request's task: blocking-pool jobs, rayon jobs.
pub fn enter(context: Option<Arc<RequestContext>>) -> Entered {
    let previous = CURRENT
        .try_with(|current| {
            current
                .try_borrow_mut()
                .ok()
                .map(|mut c| std::mem::replace(&mut *c, context))
        })
        .ok()
        .flatten();
    Entered { previous }
}

/// `work`, made to run on another thread (blocking pool, rayon) as part of the request this
/// thread works for now: inside the current span (so it shows in the request's trace) and
/// with the request as that thread's current one (so its logs name the request).
pub fn carried<R>(work: impl FnOnce() -> R) -> impl FnOnce() -> R {
    let span = tracing::Span::current();
    let request = current();
    move || {
        let _request = enter(request);
        span.in_scope(work)
    }
}

/// See [`enter`].
#[must_use = "the request context is left when this guard drops"]
pub struct Entered {
    /// `Some(previous)`; `None` if entering failed (thread-local gone or in use), then
    /// there is nothing to restore.
    previous: Option<Option<Arc<RequestContext>>>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            let _ = CURRENT.try_with(|current| {
                if let Ok(mut current) = current.try_borrow_mut() {
                    *current = previous;
                }
            });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceId};

    pub(crate) fn sample(request_id: &str) -> Arc<RequestContext> {
        Arc::new(RequestContext {
            route: "/sleep/{variant}",
            variant: "blocking",
            method: "GET",
            path: InlineText::truncated("/sleep/blocking"),
            request_id: InlineText::truncated(request_id),
            ids: SpanIds {
                trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("id"),
                span_id: SpanId::from_hex("00f067aa0ba902b7").expect("id"),
                sampled: false,
            },
            trace_state: None,
            on_stall: None,
        })
    }

    #[test]
    fn inline_text_keeps_whole_characters() {
        assert_eq!(InlineText::<8>::truncated("/a/b").as_str(), "/a/b");
        assert_eq!(InlineText::<4>::truncated("/abcdef").as_str(), "/abc");
        // `é` is two bytes: cutting at 4 would split it.
        assert_eq!(InlineText::<4>::truncated("/abé").as_str(), "/ab");
        assert_eq!(InlineText::<4>::truncated("").as_str(), "");
    }

    pub(crate) fn current_id() -> Option<String> {
        with_current(|c| c.map(|c| c.request_id().to_owned()))
    }

    #[test]
    fn entering_nests_and_restores() {
        assert_eq!(current_id(), None);
        {
            let _outer = enter(Some(sample("outer")));
            assert_eq!(current_id().as_deref(), Some("outer"));
            {
                let _inner = enter(Some(sample("inner")));
                assert_eq!(current_id().as_deref(), Some("inner"));
                let _none = enter(None);
                assert_eq!(current_id(), None);
            }
            assert_eq!(current_id().as_deref(), Some("outer"));
            assert!(current().is_some_and(|c| c.request_id() == "outer"));
        }
        assert_eq!(current_id(), None);
    }

    #[test]
    fn carried_work_runs_in_the_request_on_another_thread() {
        let work = {
            let _in_request = enter(Some(sample("carried")));
            carried(current_id)
        };
        assert_eq!(current_id(), None);
        let seen = std::thread::spawn(move || (work(), current_id()))
            .join()
            .expect("thread");
        assert_eq!(
            seen,
            (Some("carried".into()), None),
            "in the request while it runs, not after"
        );
    }
}
