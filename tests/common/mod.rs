//! Helpers shared by the integration tests: a real service on an ephemeral port and
//! concurrent requests timed from a client on a different runtime.
#![allow(dead_code)] // each test binary uses a different subset

pub mod db;

use std::time::Instant;

use futures::future::join_all;
use stallscope::config::ServeArgs;
use stallscope::server::RunningService;

/// Service settings for tests: loopback, ephemeral port, `workers` workers.
pub fn serve_args(workers: u16) -> ServeArgs {
    let mut args = ServeArgs::defaults();
    args.bind = "127.0.0.1:0".parse().expect("literal address");
    args.shutdown_deadline_ms = 2_000;
    args.runtime.workers = Some(workers);
    args.runtime.max_blocking_threads = 64;
    args.limits.max_cpu_iterations = 1_000_000_000;
    args.upstream.upstream_url = None;
    args.upstream.upstream_timeout_ms = 10_000;
    args
}

/// A [`RunningService`] and, when the test did not pick a database, the temporary directory
/// of its own SQLite file (removed after the service stops).
pub struct TestService {
    service: RunningService,
    _db_dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for TestService {
    type Target = RunningService;
    fn deref(&self) -> &RunningService {
        &self.service
    }
}

/// Starts the real service (own thread, own runtime) and waits until it answers. A test that
/// left `database_url` at its default gets a fresh SQLite file in a temporary directory
/// instead of `./stallscope.db`.
pub async fn start(args: &ServeArgs) -> TestService {
    let mut args = args.clone();
    let db_dir = if args.database.database_url == ServeArgs::defaults().database.database_url {
        let dir = tempfile::tempdir().expect("temp dir");
        args.database.database_url = format!("sqlite://{}", dir.path().join("test.db").display());
        Some(dir)
    } else {
        None
    };
    let service = RunningService::start(&args).expect("service starts");
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client
            .get(format!("{}/healthz", service.base_url()))
            .send()
            .await
            .is_ok()
        {
            return TestService {
                service,
                _db_dir: db_dir,
            };
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("service did not become healthy");
}

/// Sends `n` GETs to `url` at once, each on its own connection; returns each completion
/// time in ms (sorted) after checking every answer is 200.
pub async fn completion_times(url: &str, n: usize) -> Vec<f64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let start = Instant::now();
    let requests = (0..n).map(|_| async {
        let response = client.get(url).send().await.expect("request sent");
        let status = response.status();
        let body = response.text().await.expect("body read");
        assert_eq!(status, 200, "{url}: {body}");
        start.elapsed().as_secs_f64() * 1000.0
    });
    let mut times = join_all(requests).await;
    times.sort_by(f64::total_cmp);
    times
}

/// A free loopback port (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The real binary, with its log lines (stderr) timestamped as they arrive.
pub struct ServiceProcess {
    pub child: tokio::process::Child,
    pub base_url: String,
    /// The admin listener (`--metrics-bind`), scrapeable while the service is stalled.
    pub admin_url: String,
    pub logs: tokio::sync::mpsc::UnboundedReceiver<(Instant, String)>,
    /// The working directory, where its default SQLite database lives.
    _workdir: tempfile::TempDir,
}

impl ServiceProcess {
    /// Starts `stallscope serve` with `args` plus a bind and a metrics bind of its own.
    pub async fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[]).await
    }

    /// [`ServiceProcess::start`] with extra environment variables.
    pub async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_under(&[], args, env).await
    }

    /// [`ServiceProcess::start_with_env`] run by `wrapper` (a command and its arguments that
    /// ends by running the rest of its command line, such as `prlimit --nofile=1024 --`).
    pub async fn start_under(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let bind = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let workdir = tempfile::tempdir().expect("temp dir");
        let binary = env!("CARGO_BIN_EXE_stallscope");
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = tokio::process::Command::new(program);
                command.args(wrapper_args).arg(binary);
                command
            }
            None => tokio::process::Command::new(binary),
        };
        let mut child = command
            .arg("serve")
            .current_dir(workdir.path())
            .env_remove("DATABASE_URL")
            .args(["--bind", &bind, "--metrics-bind", &admin])
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, logs) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let process = Self {
            child,
            base_url: format!("http://{bind}"),
            admin_url: format!("http://{admin}"),
            logs,
            _workdir: workdir,
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(response) = client
                .get(format!("{}/healthz", process.base_url))
                .send()
                .await
                && response.status().is_success()
            {
                return process;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("{} never became healthy", process.base_url);
    }

    /// Scrapes the admin `/metrics` and parses it.
    pub async fn scrape(&self) -> Scrape {
        let text = reqwest::get(format!("{}/metrics", self.admin_url))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics text");
        Scrape::parse(&text)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = self.child.id().expect("running").to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
    }

    /// Sends SIGTERM and waits (at most 15 s) for the exit: its status, and how long after
    /// the signal it came.
    pub async fn terminate(&mut self) -> (std::process::ExitStatus, std::time::Duration) {
        let signalled = Instant::now();
        self.sigterm();
        let status = tokio::time::timeout(std::time::Duration::from_secs(15), self.child.wait())
            .await
            .expect("exits")
            .expect("wait");
        (status, signalled.elapsed())
    }

    /// Log lines that arrived so far.
    pub fn drain_logs(&mut self) -> Vec<(Instant, String)> {
        let mut lines = Vec::new();
        while let Ok(line) = self.logs.try_recv() {
            lines.push(line);
        }
        lines
    }
}

/// One series of a parsed `/metrics` document.
pub struct Series {
    pub metric: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: SeriesValue,
}

pub enum SeriesValue {
    Scalar(f64),
    /// Cumulative `(le, count)` buckets, the total count and the sum.
    Histogram {
        buckets: Vec<(f64, f64)>,
        count: f64,
        sum: f64,
    },
}

impl Series {
    fn matches(&self, metric: &str, labels: &[(&str, &str)]) -> bool {
        self.metric == metric
            && labels
                .iter()
                .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// A parsed `/metrics` document (parsed strictly by `openmetrics-parser`, which also
/// handles braces inside label values such as `route="/sleep/{variant}"`).
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Series>,
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        use openmetrics_parser::PrometheusValue;
        let exposition = openmetrics_parser::prometheus::parse_prometheus(text)
            .unwrap_or_else(|err| panic!("invalid Prometheus text ({err:?}):\n{text}"));
        let mut samples = Vec::new();
        for (name, family) in &exposition.families {
            for sample in family.iter_samples() {
                let labels = sample
                    .get_labelset()
                    .map(|set| set.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default();
                let value = match &sample.value {
                    PrometheusValue::Unknown(n) | PrometheusValue::Gauge(n) => {
                        SeriesValue::Scalar(n.as_f64())
                    }
                    PrometheusValue::Counter(c) => SeriesValue::Scalar(c.value.as_f64()),
                    PrometheusValue::Histogram(h) => SeriesValue::Histogram {
                        buckets: h
                            .buckets
                            .iter()
                            .map(|b| (b.upper_bound, b.count.as_f64()))
                            .collect(),
                        count: h
                            .buckets
                            .iter()
                            .map(|b| b.count.as_f64())
                            .fold(0.0, f64::max),
                        sum: h.sum.as_ref().map_or(0.0, |s| s.as_f64()),
                    },
                    PrometheusValue::Summary(_) => panic!("{name} is a summary; histograms only"),
                };
                samples.push(Series {
                    metric: name.clone(),
                    labels,
                    value,
                });
            }
        }
        Self {
            text: text.to_owned(),
            samples,
        }
    }

    /// The value of the counter or gauge `metric` summed over series with all of `labels`.
    pub fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.matches(metric, labels))
            .map(|s| match s.value {
                SeriesValue::Scalar(v) => v,
                SeriesValue::Histogram { .. } => panic!("{metric} is a histogram"),
            })
            .sum()
    }

    /// Histogram `metric` summed over series with all of `labels`: (count, sum).
    pub fn histogram(&self, metric: &str, labels: &[(&str, &str)]) -> (f64, f64) {
        self.samples
            .iter()
            .filter(|s| s.matches(metric, labels))
            .fold((0.0, 0.0), |(count, sum), s| match &s.value {
                SeriesValue::Histogram {
                    count: c, sum: x, ..
                } => (count + c, sum + x),
                SeriesValue::Scalar(_) => panic!("{metric} is not a histogram"),
            })
    }

    /// Observations of histogram `metric` above `le` (count − bucket{le}).
    pub fn histogram_above(&self, metric: &str, le: f64) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.metric == metric)
            .map(|s| match &s.value {
                SeriesValue::Histogram { buckets, count, .. } => {
                    let at_or_below = buckets
                        .iter()
                        .filter(|(bound, _)| *bound <= le)
                        .map(|(_, c)| *c)
                        .fold(0.0, f64::max);
                    count - at_or_below
                }
                SeriesValue::Scalar(_) => panic!("{metric} is not a histogram"),
            })
            .sum()
    }

    /// How many distinct series `metric` has.
    pub fn series(&self, metric: &str) -> usize {
        self.samples.iter().filter(|s| s.metric == metric).count()
    }
}

/// The live page's stream (`/live/stream`, Server-Sent Events), read snapshot by snapshot.
pub struct SnapshotStream {
    response: reqwest::Response,
    text: String,
    parsed: std::collections::VecDeque<serde_json::Value>,
}

impl SnapshotStream {
    /// Reads `response`, a stream already checked by the caller.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            text: String::new(),
            parsed: std::collections::VecDeque::new(),
        }
    }

    /// The next snapshot; panics if none arrives `within`.
    pub async fn next(&mut self, within: std::time::Duration) -> serde_json::Value {
        loop {
            if let Some(snapshot) = self.parsed.pop_front() {
                return snapshot;
            }
            let chunk = tokio::time::timeout(within, self.response.chunk())
                .await
                .expect("a snapshot in time")
                .expect("the stream reads")
                .expect("the stream is open");
            self.text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = self.text.find("\n\n") {
                let event: String = self.text.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                    self.parsed
                        .push_back(serde_json::from_str(data).expect("a snapshot is JSON"));
                }
            }
        }
    }

    /// Whether the server ends the stream `within` (whatever it still sends before).
    pub async fn ends_within(&mut self, within: std::time::Duration) -> bool {
        tokio::time::timeout(within, async {
            while let Ok(Some(_)) = self.response.chunk().await {}
        })
        .await
        .is_ok()
    }
}
