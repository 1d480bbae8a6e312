//! Verdicts and the human-readable table.

use std::fmt::Write as _;

use serde::Serialize;

use super::ExperimentReport;

/// A perfectly serialised pair is 2.0, a parallel one 1.0: 1.5 splits them with room on
/// both sides for a busy machine.
pub const SERIALISED_AT: f64 = 1.5;

/// What a batch of concurrent requests shows, from two independent signals: *timing* (did the
/// slowest request finish about when a parallel run would?) and the target's *watchdog* (did
/// it catch a poll holding a worker?). Timing alone cannot tell a blocked executor from a
/// machine without a free core, and the watchdog alone cannot tell whether anyone waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The slowest request finished about when a parallel run would, and no worker was held.
    Parallel,
    /// Requests finished one after another and the watchdog caught held workers (or could not
    /// be read): the executor was blocked.
    Serialised,
    /// Requests finished late, yet the watchdog saw no worker held: the limit was the machine
    /// (a busy or single-core box cannot hash two requests at once, whatever the code does) or
    /// a full pool, not the executor.
    Contended,
    /// Requests finished as if in parallel, yet the watchdog caught held workers: spare
    /// workers absorbed the batch (fewer requests than workers + 1), or a single core would
    /// have serialised the work anyway. The bug is there; this batch could not show it.
    Masked,
    /// Some requests failed, so nothing can be said.
    Failed,
}

impl Verdict {
    /// Judges a batch by its slowdown and by the stalls the target's watchdog reported during
    /// it (`None` when its `/metrics` could not be read: timing alone then decides).
    pub fn judge(slowdown: f64, all_succeeded: bool, watchdog_stalls: Option<u64>) -> Self {
        let late = slowdown >= SERIALISED_AT;
        match (all_succeeded, late, watchdog_stalls) {
            (false, _, _) => Verdict::Failed,
            (true, true, Some(0)) => Verdict::Contended,
            (true, true, _) => Verdict::Serialised,
            (true, false, Some(stalls)) if stalls > 0 => Verdict::Masked,
            (true, false, _) => Verdict::Parallel,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Verdict::Parallel => "parallel",
            Verdict::Serialised => "serialised: the executor was blocked",
            Verdict::Contended => "slow, but no worker was blocked: busy machine or full pool",
            Verdict::Masked => {
                "on time, but workers were blocked: spare workers or one core hid it"
            }
            Verdict::Failed => "failed: some requests errored",
        }
    }

    /// Whether the verdict says what the lesson expects of a variant that does (or does not)
    /// block the executor.
    pub fn agrees_with_lesson(self, expected_to_stall: bool) -> bool {
        match self {
            Verdict::Failed => true,
            Verdict::Serialised | Verdict::Masked => expected_to_stall,
            Verdict::Parallel | Verdict::Contended => !expected_to_stall,
        }
    }
}

/// One table per lesson, e.g.
///
/// ```text
/// sleep — 2 concurrent requests of 1000 ms on 1 worker (parallel finish ≈ 1000 ms)
///   variant          completions (ms)       slowest/parallel   stalls  verdict
///   async            1002, 1002                         1.00        0  parallel
///   blocking         1001, 2001                         2.00        2  serialised: the executor was blocked
/// ```
pub fn render_table(report: &ExperimentReport) -> String {
    let mut out = String::new();
    for lesson in &report.lessons {
        let workers = if report.workers == 1 {
            "worker"
        } else {
            "workers"
        };
        let _ = writeln!(
            out,
            "{} — {} concurrent requests of {} ms on {} {workers} (parallel finish ≈ {:.0} ms)",
            lesson.lesson.name(),
            report.concurrency,
            report.ms,
            report.workers,
            lesson.parallel_ms
        );
        let _ = writeln!(
            out,
            "  {:<16} {:<22} {:>16} {:>8}  verdict",
            "variant", "completions (ms)", "slowest/parallel", "stalls"
        );
        for variant in &lesson.variants {
            let completions = variant
                .completions_ms
                .iter()
                .map(|ms| format!("{ms:.0}"))
                .collect::<Vec<_>>()
                .join(", ");
            let surprise = if variant.agrees_with_lesson {
                ""
            } else {
                "  (unexpected!)"
            };
            let stalls = variant
                .watchdog_stalls
                .map_or_else(|| "?".to_owned(), |n| n.to_string());
            let _ = writeln!(
                out,
                "  {:<16} {:<22} {:>16.2} {:>8}  {}{surprise}",
                variant.variant,
                completions,
                variant.slowdown,
                stalls,
                variant.verdict.describe()
            );
            for error in &variant.errors {
                let _ = writeln!(out, "      error: {error}");
            }
        }
        out.push('\n');
    }
    if let Some(cpu) = report.cpu {
        let _ = writeln!(
            out,
            "CPU work: {} SHA-256 rounds per request (calibrated to ≈ {} ms; one alone took {:.0} ms).",
            cpu.iterations, report.ms, cpu.solo_ms
        );
    }
    out.push_str(
        "Read it: a stalling variant's requests finish one after another (slowest ≈ C × D on one \
         worker); a correct one finishes them together (≈ D). `stalls` counts the polls the \
         service's watchdog caught holding a worker past its threshold during the run.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_thresholds() {
        assert_eq!(Verdict::judge(1.02, true, Some(0)), Verdict::Parallel);
        assert_eq!(Verdict::judge(1.49, true, Some(0)), Verdict::Parallel);
        assert_eq!(Verdict::judge(1.5, true, Some(1)), Verdict::Serialised);
        assert_eq!(Verdict::judge(2.01, true, Some(2)), Verdict::Serialised);
        assert_eq!(Verdict::judge(1.0, false, Some(0)), Verdict::Failed);
        assert_eq!(Verdict::judge(2.5, false, Some(3)), Verdict::Failed);
    }

    #[test]
    fn slow_runs_are_blamed_on_the_executor_only_when_the_watchdog_saw_a_stall() {
        // Two correct CPU requests on a machine that lost its second core: late, no stall.
        assert_eq!(Verdict::judge(1.9, true, Some(0)), Verdict::Contended);
        // The watchdog caught a held worker: the executor was blocked.
        assert_eq!(Verdict::judge(1.9, true, Some(1)), Verdict::Serialised);
        // A target whose /metrics could not be read is judged by timing alone.
        assert_eq!(Verdict::judge(1.9, true, None), Verdict::Serialised);
        // On time with held workers: `sleep/blocking` with a spare worker per request, or
        // `cpu/inline` on one core, where the pair would be serial whatever the code did.
        assert_eq!(Verdict::judge(1.1, true, Some(2)), Verdict::Masked);
        assert_eq!(Verdict::judge(1.1, true, None), Verdict::Parallel);
    }

    #[test]
    fn every_verdict_agrees_or_disagrees_with_the_lesson() {
        assert!(Verdict::Serialised.agrees_with_lesson(true));
        assert!(Verdict::Masked.agrees_with_lesson(true));
        assert!(!Verdict::Parallel.agrees_with_lesson(true));
        assert!(!Verdict::Contended.agrees_with_lesson(true));
        assert!(Verdict::Parallel.agrees_with_lesson(false));
        assert!(Verdict::Contended.agrees_with_lesson(false));
        assert!(!Verdict::Serialised.agrees_with_lesson(false));
        assert!(!Verdict::Masked.agrees_with_lesson(false));
    }
}
