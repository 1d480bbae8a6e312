//! Per-thread shards for the counters every request updates.
//!
//! A counter shared by all workers is one cache line that every request, on every core, must
//! own for a moment: with two workers serving the same route, that line travels between the
//! cores on every request. Split into shards, one per thread that records (threads take shards
//! in turn), each worker writes its own line, and the reader — a `/metrics` scrape — sums the
//! shards. Every figure kept this way is a sum or a maximum, so the sum of the shards is
//! exactly what a single counter would have held.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

/// Shards per instrument: more than the workers of a typical small deployment, few enough that
/// summing them at scrape time is nothing.
pub const SHARDS: usize = 8;

/// The shard of the calling thread, handed out in turn on first use.
pub fn this_threads_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
    }
    SHARD
        .try_with(|shard| {
            shard.get().unwrap_or_else(|| {
                let taken = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
                shard.set(Some(taken));
                taken
            })
        })
        // Only while this thread's locals are being destroyed.
        .unwrap_or(0)
}

/// `T`, alone on its cache lines (two, for CPUs that fetch lines in pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

/// A gauge that goes up and down by one, per shard. A request may start on one worker and end
/// on another, so a single shard can go negative; the sum cannot.
#[derive(Debug, Default)]
pub struct ShardedGauge {
    shards: [Padded<AtomicI64>; SHARDS],
}

impl ShardedGauge {
    pub fn increment(&self) {
        self.shards[this_threads_shard()]
            .0
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn decrement(&self) {
        self.shards[this_threads_shard()]
            .0
            .fetch_sub(1, Ordering::Relaxed);
    }

    pub fn value(&self) -> i64 {
        self.shards
            .iter()
            .map(|shard| shard.0.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Runs `work` once on each of `threads` new threads; the shards those threads took.
    pub(crate) fn shards_taken_by(
        threads: usize,
        work: impl Fn() + Copy + Send + 'static,
    ) -> BTreeSet<usize> {
        let threads: Vec<_> = (0..threads)
            .map(|_| {
                std::thread::spawn(move || {
                    work();
                    this_threads_shard()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("thread"))
            .collect()
    }

    #[test]
    fn a_gauge_moved_between_threads_sums_right() {
        let gauge: &'static ShardedGauge = Box::leak(Box::default());
        let shards = shards_taken_by(SHARDS + 2, move || {
            gauge.increment();
            gauge.increment();
        });
        assert!(shards.len() > 1, "threads take different shards");
        assert_eq!(gauge.value(), 2 * (SHARDS as i64 + 2));
        // Ended on another thread than they started on.
        for _ in 0..2 * (SHARDS + 2) {
            gauge.decrement();
        }
        assert_eq!(gauge.value(), 0);
    }
}
