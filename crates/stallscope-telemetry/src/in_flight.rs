//! The requests the service is answering right now, so that a shutdown that cannot wait for
//! them any longer can say which ones it abandons (route, variant, request id, age).
//!
//! One short lock per request start and end: the requests in flight at once are few, and the
//! list is read only at shutdown, so a plain map beats anything cleverer in clarity. An
//! ordered one: its keys come in order and need no hashing (SipHash was ≈ 600 of the route
//! layer's instructions per request, `bench/instructions.sh`). The same
//! lock makes the in-flight cap one comparison: no extra layer, no extra count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::clock::Stamp;
use super::request_context::RequestContext;

pub struct InFlightRequests {
    next_key: AtomicU64,
    requests: Mutex<BTreeMap<u64, (Arc<RequestContext>, Stamp)>>,
    /// Requests listed at once, at most.
    cap: usize,
}

impl Default for InFlightRequests {
    fn default() -> Self {
        Self::with_cap(usize::MAX)
    }
}

/// One request still being answered, as a shutdown reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    pub method: &'static str,
    pub route: &'static str,
    pub variant: &'static str,
    pub request_id: String,
    pub age: Duration,
}

impl InFlightRequests {
    /// At most `cap` requests listed at once.
    pub fn with_cap(cap: usize) -> Self {
        Self {
            next_key: AtomicU64::new(0),
            requests: Mutex::default(),
            cap,
        }
    }

    /// Lists `context` until the returned ticket is dropped (the request answered, or its
    /// future dropped because the client went away); `None` when `cap` requests are listed.
    pub fn enter(
        self: &Arc<Self>,
        context: &Arc<RequestContext>,
        started: Stamp,
    ) -> Option<Ticket> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut requests) = self.requests.lock() {
            if requests.len() >= self.cap {
                return None;
            }
            requests.insert(key, (Arc::clone(context), started));
        }
        Some(Ticket {
            registry: Arc::clone(self),
            key,
        })
    }

    /// The requests in flight now, oldest first.
    pub fn pending(&self) -> Vec<PendingRequest> {
        let now = Stamp::now();
        let mut pending: Vec<PendingRequest> = self
            .requests
            .lock()
            .map(|requests| {
                requests
                    .values()
                    .map(|(context, started)| PendingRequest {
                        method: context.method,
                        route: context.route,
                        variant: context.variant,
                        request_id: context.request_id().to_owned(),
                        age: Duration::from_nanos(started.nanos_until(now)),
                    })
                    .collect()
            })
            .unwrap_or_default();
        pending.sort_by_key(|request| std::cmp::Reverse(request.age));
        pending
    }
}

/// Keeps a request listed in [`InFlightRequests`] until dropped.
pub struct Ticket {
    registry: Arc<InFlightRequests>,
    key: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut requests) = self.registry.requests.lock() {
            requests.remove(&self.key);
        }
    }
}
