//! The clock of the timestamps taken on every request and every task poll: the route layer's
//! request duration and the watchdog's poll start and end.
//!
//! [`Stamp`] reads the CPU's time-stamp counter through `quanta` (calibrated once against the
//! monotonic clock; the monotonic clock itself where there is no invariant TSC): a third of
//! `Instant`'s cost per pair of reads, taken twice per task poll (figures in docs/benchmarks.md).
//! The calibration happens at the first [`Stamp::now`], the watchdog's, before any request.

use std::sync::LazyLock;
use std::time::Duration;

static CLOCK: LazyLock<quanta::Clock> = LazyLock::new(quanta::Clock::new);

/// A point in time: the clock's raw count, comparable only with other [`Stamp`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(u64);

impl Stamp {
    pub fn now() -> Self {
        Self(CLOCK.raw())
    }

    /// Nanoseconds from `self` to `later`; 0 if `later` is not later (counters of different
    /// cores can disagree by a few cycles).
    pub fn nanos_until(self, later: Stamp) -> u64 {
        CLOCK.delta_as_nanos(self.0, later.0)
    }

    pub fn elapsed(self) -> Duration {
        Duration::from_nanos(self.nanos_until(Self::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_measure_time_like_the_monotonic_clock() {
        // Each stamp taken between two monotonic readings, so a preemption anywhere only
        // widens the bounds instead of failing the test.
        let before_start = std::time::Instant::now();
        let start = Stamp::now();
        let after_start = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(50));
        let before_end = std::time::Instant::now();
        let end = Stamp::now();
        let after_end = std::time::Instant::now();

        let measured = Duration::from_nanos(start.nanos_until(end));
        let (shortest, longest) = (before_end - after_start, after_end - before_start);
        // quanta's calibration is good to a few parts per million; allow a part per thousand.
        let slack = longest / 1000 + Duration::from_micros(1);
        assert!(
            measured + slack >= shortest && measured <= longest + slack,
            "{measured:?} outside {shortest:?}..={longest:?}"
        );
    }

    #[test]
    fn an_earlier_stamp_is_zero_nanoseconds_away() {
        let earlier = Stamp::now();
        std::thread::sleep(Duration::from_millis(1));
        let later = Stamp::now();
        assert_eq!(later.nanos_until(earlier), 0);
        assert!(earlier.nanos_until(later) >= 900_000);
    }
}
