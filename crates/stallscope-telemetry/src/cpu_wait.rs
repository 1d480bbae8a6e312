//! Whether a long poll was code that blocked, or a host that did not let the worker run.
//!
//! To the watchdog both look the same: a poll that started long ago and has not ended. But a
//! worker thread that was runnable and waiting for a CPU (an overloaded host, a noisy
//! neighbour, a container at its CPU limit) is not a handler's fault. Linux keeps, per thread,
//! the time it ran and the time it spent runnable but not running
//! (`/proc/self/task/TID/schedstat`: on-CPU time, run-queue delay) and its state (`stat`: `R`
//! running or runnable, `S`/`D` blocked in a syscall), and per cgroup the time its CPU quota
//! held every thread back (`cpu.stat`: `throttled_usec` in cgroup v2, `throttled_time` in
//! v1). Sampled when the watchdog first sees a poll running and again when it reports it,
//! they tell the two apart: mostly waiting for a CPU is `host`; anything else (running, or
//! blocked in a syscall such as a sleep or a socket read) is `code`.
//!
//! The run-queue delay grows only when the thread gets a CPU back, so while it still waits
//! the figure lags. A thread that is runnable (`R`) and has not run for most of the stall is
//! therefore counted as waiting for all the time it did not run.

use std::path::PathBuf;
use std::time::Duration;

/// Why a stall happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The poll itself blocked or computed: the handler's fault.
    Code,
    /// The worker thread spent most of the stall waiting for a CPU (run queue or cgroup
    /// throttling): the host's fault.
    Host,
}

impl Cause {
    /// The `cause` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Code => "code",
            Cause::Host => "host",
        }
    }
}

/// One thread's scheduler statistics.
#[derive(Debug)]
pub struct ThreadStat(PathBuf);

impl ThreadStat {
    /// The calling thread's, if the kernel reports it (Linux with schedstat).
    pub fn current() -> Option<Self> {
        // `/proc/thread-self` links to `PID/task/TID`.
        let link = std::fs::read_link("/proc/thread-self").ok()?;
        let path = PathBuf::from("/proc").join(link).join("schedstat");
        path.exists().then_some(Self(path))
    }

    /// Total time the thread has run, and spent runnable but waiting for a CPU.
    fn times(&self) -> Option<(Duration, Duration)> {
        let text = std::fs::read_to_string(&self.0).ok()?;
        let mut fields = text.split_whitespace();
        let on_cpu = fields.next()?.parse().ok()?;
        let run_delay = fields.next()?.parse().ok()?;
        Some((
            Duration::from_nanos(on_cpu),
            Duration::from_nanos(run_delay),
        ))
    }

    /// Whether the thread is running or runnable right now (`R`), rather than blocked.
    pub fn runnable(&self) -> Option<bool> {
        let text = std::fs::read_to_string(self.0.with_file_name("stat")).ok()?;
        // `TID (comm) STATE …`; comm may hold spaces and parentheses, so read after the last.
        let state = text.rsplit_once(')')?.1.split_whitespace().next()?;
        Some(state == "R")
    }
}

/// The process's cgroup CPU throttling counter.
#[derive(Debug)]
pub struct Throttling {
    path: PathBuf,
    /// The `cpu.stat` key and how many nanoseconds one unit of it is.
    key: &'static str,
    nanos_per_unit: u64,
}

impl Throttling {
    /// Finds the `cpu.stat` of this process's cgroup (v2, or v1's cpu controller).
    pub fn detect() -> Option<Self> {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mut candidates = Vec::new();
        for line in cgroups.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let path = path.trim_start_matches('/');
            if controllers.is_empty() {
                for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                    candidates.push((PathBuf::from(root).join(path), "throttled_usec", 1_000));
                }
            } else if controllers.split(',').any(|c| c == "cpu") {
                let root = PathBuf::from("/sys/fs/cgroup").join(controllers);
                candidates.push((root.join(path), "throttled_time", 1));
                let root = PathBuf::from("/sys/fs/cgroup/cpu");
                candidates.push((root.join(path), "throttled_time", 1));
            }
        }
        candidates
            .into_iter()
            .map(|(dir, key, nanos_per_unit)| Self {
                path: dir.join("cpu.stat"),
                key,
                nanos_per_unit,
            })
            .find(|t| t.throttled().is_some())
    }

    fn throttled(&self) -> Option<Duration> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let value: u64 = text
            .lines()
            .find_map(|line| line.strip_prefix(self.key)?.trim().parse().ok())?;
        Some(Duration::from_nanos(
            value.saturating_mul(self.nanos_per_unit),
        ))
    }
}

/// A thread's CPU wait so far, at some instant (nanoseconds in the watchdog's clock).
#[derive(Debug, Clone, Copy)]
pub struct WaitSample {
    pub at_ns: u64,
    on_cpu: Duration,
    run_delay: Duration,
    throttled: Duration,
}

impl WaitSample {
    /// Samples `thread`'s run-queue delay and the cgroup's throttling (0 when unknown).
    pub fn take(at_ns: u64, thread: &ThreadStat, throttling: Option<&Throttling>) -> Option<Self> {
        let (on_cpu, run_delay) = thread.times()?;
        Some(Self {
            at_ns,
            on_cpu,
            run_delay,
            throttled: throttling
                .and_then(Throttling::throttled)
                .unwrap_or_default(),
        })
    }

    /// Why the time from `self` to `later` went by: how long the thread waited for a CPU
    /// in it, and whether that was most of it. `runnable_now`: whether the thread is running
    /// or runnable at `later` (then the time it did not run was spent waiting for a CPU);
    /// `None` when the caller is the thread itself, whose run-queue delay is up to date.
    pub fn cause_until(&self, later: &WaitSample, runnable_now: Option<bool>) -> (Cause, Duration) {
        let wall = later.at_ns.saturating_sub(self.at_ns);
        let mut waited = later.run_delay.saturating_sub(self.run_delay)
            + later.throttled.saturating_sub(self.throttled);
        if runnable_now == Some(true) {
            let ran = later.on_cpu.saturating_sub(self.on_cpu);
            let off_cpu = Duration::from_nanos(wall).saturating_sub(ran);
            waited = waited.max(off_cpu);
        }
        let waited_ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        let cause = if wall > 0 && waited_ns.saturating_mul(2) > wall {
            Cause::Host
        } else {
            Cause::Code
        };
        (cause, waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, on_cpu_ms: u64, run_delay_ms: u64, throttled_ms: u64) -> WaitSample {
        WaitSample {
            at_ns: at_ms * 1_000_000,
            on_cpu: Duration::from_millis(on_cpu_ms),
            run_delay: Duration::from_millis(run_delay_ms),
            throttled: Duration::from_millis(throttled_ms),
        }
    }

    #[test]
    fn mostly_waiting_for_a_cpu_is_the_host() {
        // Seen from the thread itself at the end: its run-queue delay is up to date.
        let (cause, waited) = sample(0, 0, 10, 0).cause_until(&sample(200, 30, 170, 0), None);
        assert_eq!(cause, Cause::Host);
        assert_eq!(waited, Duration::from_millis(160));
        // Throttling counts as waiting too.
        let (cause, _) = sample(0, 0, 0, 50).cause_until(&sample(200, 0, 40, 120), None);
        assert_eq!(cause, Cause::Host);
        // Seen from outside while it still waits: runnable, and it barely ran.
        let (cause, waited) = sample(0, 0, 10, 0).cause_until(&sample(200, 3, 10, 0), Some(true));
        assert_eq!(cause, Cause::Host);
        assert_eq!(waited, Duration::from_millis(197));
    }

    #[test]
    fn running_or_sleeping_is_the_code() {
        // Computing: runnable, and it ran nearly all the time.
        let (cause, waited) = sample(0, 0, 10, 0).cause_until(&sample(200, 195, 12, 0), Some(true));
        assert_eq!(cause, Cause::Code);
        assert_eq!(waited, Duration::from_millis(5));
        // Sleeping in a syscall: not runnable, so not running is not waiting.
        let (cause, _) = sample(0, 0, 10, 0).cause_until(&sample(200, 1, 10, 0), Some(false));
        assert_eq!(cause, Cause::Code);
        assert_eq!(
            sample(5, 0, 0, 0).cause_until(&sample(5, 0, 0, 0), None).0,
            Cause::Code
        );
    }

    #[test]
    fn this_thread_has_scheduler_statistics_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let thread = ThreadStat::current().expect("/proc/thread-self/schedstat");
        let first = WaitSample::take(0, &thread, Throttling::detect().as_ref()).expect("sample");
        let later = WaitSample::take(1, &thread, None).expect("sample");
        assert!(later.run_delay >= first.run_delay);
        assert!(later.on_cpu >= first.on_cpu);
        assert_eq!(thread.runnable(), Some(true), "this thread is running");
    }
}
