//! The stalls in progress and recently ended, so that a request can name the stall that made
//! it slow.
//!
//! A request that waits behind a blocked worker shows nothing wrong in its own figures: while
//! the worker is blocked no timer fires and no socket is read, so the request is not even
//! *woken* late — its wake-up simply happens after the stall, and its scheduled wait stays
//! near zero. What it has in common with the culprit is time. The watchdog records each stall
//! here (start, end, worker, route, variant, the culprit request's ids); when a request ends,
//! [`StallLog::overlap`] tells how long any stall was in progress during its lifetime and
//! which one overlapped it longest.
//!
//! With several workers, a stall on one worker need not delay a request served by another:
//! the overlap is the request's *exposure* to stalls, an upper bound on what they cost it, not
//! proof of delay. With one worker (the lessons' setting) exposure and delay are the same.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::cpu_wait::Cause;
use super::span_ids::SpanIds;

/// Called once when the watchdog reports a stall of a request (see
/// `RequestContext::on_stall`).
pub type StallCallback = Box<dyn Fn(&StallReport) + Send + Sync>;

/// What the watchdog knows about a stall it just found.
#[derive(Debug, Clone)]
pub struct StallReport {
    pub worker: String,
    pub elapsed: Duration,
    /// Code that blocked, or a host that kept the worker from a CPU ([`Cause`]).
    pub cause: Cause,
    /// How much of the stall so far the worker thread spent waiting for a CPU.
    pub cpu_wait: Duration,
}

/// How many ended stalls are kept at most, newest first out last.
const KEPT: usize = 256;
/// Ended stalls older than this are forgotten: no request of this service lives longer (the
/// upstream timeout is 15 s, the shutdown deadline 25 s).
const KEPT_FOR_NS: u64 = 5 * 60 * 1_000_000_000;

/// One stall, in the watchdog's clock (nanoseconds since its epoch).
#[derive(Debug, Clone)]
pub struct Stall {
    pub started_ns: u64,
    /// `None` while it is still in progress.
    pub ended_ns: Option<u64>,
    pub worker: String,
    pub route: &'static str,
    pub variant: &'static str,
    /// The culprit request's ids; `None` for a background task's poll.
    pub culprit: Option<SpanIds>,
    /// The culprit request's id (`x-request-id`); `None` for a background task's poll.
    pub request_id: Option<String>,
    /// Blocking code, or a host that kept the worker from a CPU.
    pub cause: Cause,
}

/// Which poll a stall is: the worker slot's address and the poll's sequence number.
pub(crate) type PollKey = (usize, u64);

/// What a request learns at its end about the stalls it lived through.
#[derive(Debug, Clone)]
pub struct Exposure {
    /// How long at least one stall (of another request or task) was in progress while the
    /// request was.
    pub overlap: Duration,
    /// The stall that overlapped it longest.
    pub culprit: Stall,
}

/// A request that lived through a stall, as the live feed lists it beside its culprit.
#[derive(Debug, Clone)]
pub struct Victim {
    /// The culprit stall's start and worker: which stall of the log it is.
    pub stall_started_ns: u64,
    pub stall_worker: String,
    pub route: &'static str,
    pub variant: &'static str,
    pub request_id: String,
    /// How long stalls were in progress while it was (see [`Exposure`]).
    pub delayed: Duration,
}

/// How many victims are kept for the live feed, oldest dropped first.
const VICTIMS_KEPT: usize = 512;

#[derive(Default)]
pub struct StallLog {
    stalls: Mutex<VecDeque<(PollKey, Stall)>>,
    victims: Mutex<VecDeque<Victim>>,
    /// Stalls in progress; with [`Self::last_end_ns`], lets a request that overlapped none
    /// (nearly all of them) skip the lock.
    in_progress: AtomicUsize,
    last_end_ns: AtomicU64,
}

impl StallLog {
    /// A stall the watchdog just found still running (`stall.ended_ns` is `None`).
    pub(crate) fn began(&self, key: PollKey, stall: Stall) {
        let Ok(mut stalls) = self.stalls.lock() else {
            return;
        };
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        stalls.push_back((key, stall));
    }

    /// The poll `key` ended at `ended_ns`. A stall the watchdog never saw running (it ended
    /// between two scans) is added whole: `unseen`.
    pub(crate) fn ended(&self, key: PollKey, ended_ns: u64, unseen: impl FnOnce() -> Stall) {
        let Ok(mut stalls) = self.stalls.lock() else {
            return;
        };
        match stalls
            .iter_mut()
            .rev()
            .find(|(k, s)| *k == key && s.ended_ns.is_none())
        {
            Some((_, stall)) => {
                stall.ended_ns = Some(ended_ns);
                self.in_progress.fetch_sub(1, Ordering::AcqRel);
            }
            None => {
                let mut stall = unseen();
                stall.ended_ns = Some(ended_ns);
                stalls.push_back((key, stall));
            }
        }
        self.last_end_ns.fetch_max(ended_ns, Ordering::AcqRel);
        let forget_before = ended_ns.saturating_sub(KEPT_FOR_NS);
        let ended = stalls.iter().filter(|(_, s)| s.ended_ns.is_some()).count();
        let mut excess = ended.saturating_sub(KEPT);
        stalls.retain(|(_, s)| match s.ended_ns {
            Some(end) if excess > 0 || end < forget_before => {
                excess = excess.saturating_sub(1);
                false
            }
            _ => true,
        });
    }

    /// A request that overlapped `exposure.culprit` (and others) ended.
    pub fn victim(&self, victim: Victim) {
        let Ok(mut victims) = self.victims.lock() else {
            return;
        };
        if victims.len() == VICTIMS_KEPT {
            victims.pop_front();
        }
        victims.push_back(victim);
    }

    /// Every stall kept (in progress and recently ended, oldest first) and the victims of
    /// each, for the live feed.
    pub fn listing(&self) -> Vec<(Stall, Vec<Victim>)> {
        let stalls: Vec<Stall> = match self.stalls.lock() {
            Ok(stalls) => stalls.iter().map(|(_, stall)| stall.clone()).collect(),
            Err(_) => return Vec::new(),
        };
        // Grouped by culprit once: a page asks several times a second.
        let mut by_stall: std::collections::HashMap<(u64, String), Vec<Victim>> =
            std::collections::HashMap::new();
        if let Ok(victims) = self.victims.lock() {
            for victim in victims.iter() {
                by_stall
                    .entry((victim.stall_started_ns, victim.stall_worker.clone()))
                    .or_default()
                    .push(victim.clone());
            }
        }
        stalls
            .into_iter()
            .map(|stall| {
                let of_it = by_stall
                    .remove(&(stall.started_ns, stall.worker.clone()))
                    .unwrap_or_default();
                (stall, of_it)
            })
            .collect()
    }

    /// The stalls a request that ran from `started_ns` to `now_ns` lived through, other than
    /// its own (`own`: its ids), or `None` if it overlapped none.
    pub fn overlap(&self, started_ns: u64, now_ns: u64, own: SpanIds) -> Option<Exposure> {
        if self.in_progress.load(Ordering::Acquire) == 0
            && self.last_end_ns.load(Ordering::Acquire) < started_ns
        {
            return None;
        }
        let stalls = self.stalls.lock().ok()?;
        let mut spans: Vec<(u64, u64, &Stall)> = stalls
            .iter()
            .map(|(_, stall)| stall)
            .filter(|s| s.culprit.is_none_or(|c| c.span_id != own.span_id))
            .filter_map(|s| {
                let start = s.started_ns.max(started_ns);
                let end = s.ended_ns.unwrap_or(now_ns).min(now_ns);
                (end > start).then_some((start, end, s))
            })
            .collect();
        let culprit = spans
            .iter()
            .max_by_key(|(start, end, _)| end - start)?
            .2
            .clone();
        // The union of the overlaps: two stalls on two workers at once count once.
        spans.sort_by_key(|(start, _, _)| *start);
        let mut covered = 0;
        let mut reach = 0;
        for (start, end, _) in spans {
            let start = start.max(reach);
            if end > start {
                covered += end - start;
                reach = end;
            }
        }
        Some(Exposure {
            overlap: Duration::from_nanos(covered),
            culprit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceId};

    fn ids(n: u8) -> SpanIds {
        SpanIds {
            trace_id: TraceId::from_bytes([n; 16]),
            span_id: SpanId::from_bytes([n; 8]),
            sampled: true,
        }
    }

    fn stall(route: &'static str, started_ms: u64, culprit: Option<SpanIds>) -> Stall {
        Stall {
            started_ns: started_ms * MS,
            ended_ns: None,
            worker: "w".into(),
            route,
            variant: "blocking",
            culprit,
            request_id: None,
            cause: Cause::Code,
        }
    }

    /// A stall the watchdog never saw running: the test never expects that branch unless
    /// it passes a real one.
    fn seen() -> Stall {
        panic!("the stall was recorded as begun")
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn a_request_that_overlapped_nothing_learns_nothing() {
        let log = StallLog::default();
        assert!(log.overlap(10 * MS, 20 * MS, ids(1)).is_none());
        log.began((1, 1), stall("/a", 30, Some(ids(2))));
        log.ended((1, 1), 40 * MS, seen);
        assert!(log.overlap(10 * MS, 20 * MS, ids(1)).is_none(), "before it");
        assert!(log.overlap(41 * MS, 50 * MS, ids(1)).is_none(), "after it");
    }

    #[test]
    fn a_victim_names_its_longest_culprit_and_counts_the_union() {
        let log = StallLog::default();
        // Two stalls at once on two workers, then a third still running.
        log.began((1, 1), stall("/sleep", 100, Some(ids(2))));
        log.began((2, 1), stall("/cpu", 150, Some(ids(3))));
        log.ended((1, 1), 400 * MS, seen);
        log.ended((2, 1), 300 * MS, seen);
        log.began((1, 2), stall("/db", 500, Some(ids(4))));
        let exposure = log.overlap(0, 600 * MS, ids(1)).expect("overlapped");
        // 100..400 (the two overlapping stalls, once) + 500..600 (in progress).
        assert_eq!(exposure.overlap, Duration::from_millis(400));
        assert_eq!(exposure.culprit.route, "/sleep");
        assert_eq!(
            exposure.culprit.culprit.map(|c| c.trace_id),
            Some(ids(2).trace_id)
        );
    }

    #[test]
    fn the_culprit_is_not_its_own_victim() {
        let log = StallLog::default();
        log.began((1, 1), stall("/sleep", 100, Some(ids(2))));
        log.ended((1, 1), 400 * MS, seen);
        assert!(log.overlap(50 * MS, 450 * MS, ids(2)).is_none());
        assert!(log.overlap(50 * MS, 450 * MS, ids(1)).is_some());
    }

    #[test]
    fn a_stall_that_ended_unseen_is_added_whole_and_old_ones_are_forgotten() {
        let log = StallLog::default();
        log.ended((1, 1), 300 * MS, || stall("/cpu", 150, Some(ids(3))));
        let exposure = log.overlap(0, 400 * MS, ids(1)).expect("overlapped");
        assert_eq!(exposure.overlap, Duration::from_millis(150));
        for n in 0..(KEPT as u64 + 10) {
            log.ended((9, n), 1_000 * MS + n, || stall("/x", 999, None));
        }
        let kept = log.stalls.lock().expect("lock").len();
        assert_eq!(kept, KEPT, "at most {KEPT} ended stalls are kept");
        log.ended((9, 9_999), KEPT_FOR_NS + 2_000 * MS, || {
            stall("/y", 1_500, None)
        });
        let kept = log.stalls.lock().expect("lock").len();
        assert_eq!(kept, 1, "older than the window: forgotten");
    }

    #[test]
    fn the_listing_puts_each_victim_beside_its_culprit() {
        let log = StallLog::default();
        log.began((1, 1), stall("/sleep", 100, Some(ids(2))));
        log.began((2, 1), stall("/cpu", 150, Some(ids(3))));
        log.ended((1, 1), 400 * MS, seen);
        let exposure = log.overlap(120 * MS, 390 * MS, ids(1)).expect("overlapped");
        for n in 0..(VICTIMS_KEPT + 3) {
            log.victim(Victim {
                stall_started_ns: exposure.culprit.started_ns,
                stall_worker: exposure.culprit.worker.clone(),
                route: "/hello",
                variant: "none",
                request_id: format!("req-{n}"),
                delayed: exposure.overlap,
            });
        }
        let listing = log.listing();
        assert_eq!(listing.len(), 2);
        let (sleep, victims) = &listing[0];
        assert_eq!((sleep.route, sleep.ended_ns), ("/sleep", Some(400 * MS)));
        assert_eq!(victims.len(), VICTIMS_KEPT, "victims are bounded");
        assert_eq!(victims[0].request_id, "req-3", "the oldest go first");
        let (cpu, none) = &listing[1];
        assert_eq!((cpu.route, cpu.ended_ns, none.len()), ("/cpu", None, 0));
    }
}
