//! Verdicts and the human-readable table.

use std::fmt::Write as _;

use serde::Serialize;

use super::ExperimentReport;

/// A perfectly serialised pair is 2.0, a parallel one 1.0: 1.5 splits them with room on
/// both sides for a busy machine.
pub const SERIALISED_AT: f64 = 1.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The slowest request finished about when a parallel run would.
    Parallel,
    /// Requests finished one after another: something held the executor.
    Serialised,
    /// Some requests failed, so nothing can be said.
    Failed,
}

impl Verdict {
    pub fn judge(slowdown: f64, all_succeeded: bool) -> Self {
        if !all_succeeded {
            Verdict::Failed
        } else if slowdown >= SERIALISED_AT {
            Verdict::Serialised
        } else {
            Verdict::Parallel
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Verdict::Parallel => "parallel",
            Verdict::Serialised => "serialised: the executor was blocked",
            Verdict::Failed => "failed: some requests errored",
        }
    }
}

/// One table per lesson, e.g.
///
/// ```text
/// sleep — 2 concurrent requests of 1000 ms on 1 worker
///   variant          completions (ms)     slowest/parallel  verdict
///   async            1002, 1003                       1.00  parallel
///   blocking         1001, 2003                       2.00  serialised: the executor was blocked
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
            let surprise = if variant.expected_to_stall != (variant.verdict == Verdict::Serialised)
            {
                "  (unexpected!)"
            } else {
                ""
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
        assert_eq!(Verdict::judge(1.02, true), Verdict::Parallel);
        assert_eq!(Verdict::judge(1.49, true), Verdict::Parallel);
        assert_eq!(Verdict::judge(1.5, true), Verdict::Serialised);
        assert_eq!(Verdict::judge(2.01, true), Verdict::Serialised);
        assert_eq!(Verdict::judge(1.0, false), Verdict::Failed);
    }
}
