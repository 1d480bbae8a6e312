//! The database lessons asserted with a stopwatch, and database outages. Both kinds of test
//! must run alone: the first measures time, the second stops the shared throwaway servers
//! (so nothing else may be using them). nextest puts binaries named `timing*` in a group of
//! one, and `scripts/test` runs them after every other test; under plain `cargo test` a lock
//! keeps this binary's tests one at a time.

mod common;

use std::time::{Duration, Instant};

use common::db::{Kind, TestDb, server_setting};
use common::{TestService, completion_times, serve_args, start};
use serde_json::{Value, json};
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

const D: f64 = 300.0;

async fn service_on(db: &TestDb, workers: u16, acquire_timeout_ms: u64) -> TestService {
    let mut args = serve_args(workers);
    args.database.database_url = db.url.clone();
    args.database.db_pool_size = 4;
    args.database.db_acquire_timeout_ms = acquire_timeout_ms;
    start(&args).await
}

/// With one worker, two concurrent `/db/blocking/sleep?ms=300` finish one after the other;
/// every other variant finishes both together. The blocking ones also show up as stalls.
async fn one_worker_lesson(kind: Kind, test: &str) {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::fresh(kind, test) else {
        return;
    };
    let service = service_on(&db, 1, 5_000).await;
    let url = |variant: &str| format!("{}/db/{variant}/sleep?ms={D}", service.base_url());
    // Warm up: both pools connect once, so connecting is not what gets measured.
    for variant in ["async", "raw", "blocking", "spawn-blocking"] {
        let warm = format!("{}/db/{variant}/sleep?ms=0", service.base_url());
        completion_times(&warm, 2).await;
    }
    for variant in ["async", "raw", "spawn-blocking"] {
        let times = completion_times(&url(variant), 2).await;
        let slowest = times.iter().copied().fold(0.0, f64::max);
        assert!(
            slowest < 1.5 * D,
            "{} {variant} should run in parallel: completions {times:?} ms",
            kind.name()
        );
    }
    let times = completion_times(&url("blocking"), 2).await;
    let slowest = times.iter().copied().fold(0.0, f64::max);
    assert!(
        slowest >= 1.8 * D,
        "{} blocking should be serialised: completions {times:?} ms",
        kind.name()
    );

    let text = reqwest::get(format!("{}/metrics", service.base_url()))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    let scrape = common::Scrape::parse(&text);
    let stalls = |variant: &str| {
        scrape.value(
            "stallscope_stalls_total",
            &[("route", "/db/{variant}/sleep"), ("variant", variant)],
        )
    };
    assert!(
        stalls("blocking") >= 2.0,
        "blocking queries are stalls:\n{}",
        scrape.text
    );
    for variant in ["async", "raw", "spawn-blocking"] {
        assert_eq!(stalls(variant), 0.0, "{variant} never stalls");
    }
}

#[tokio::test]
async fn sqlite_one_worker_lesson() {
    one_worker_lesson(Kind::Sqlite, "sqlite_one_worker_lesson").await;
}

#[tokio::test]
async fn postgres_one_worker_lesson() {
    one_worker_lesson(Kind::Postgres, "postgres_one_worker_lesson").await;
}

#[tokio::test]
async fn mysql_one_worker_lesson() {
    one_worker_lesson(Kind::Mysql, "mysql_one_worker_lesson").await;
}

/// Runs the throwaway server's control script (`stop` or `start`).
fn control(ctl: &str, action: &str) {
    let status = std::process::Command::new(ctl)
        .arg(action)
        .status()
        .unwrap_or_else(|err| panic!("{ctl} {action}: {err}"));
    assert!(status.success(), "{ctl} {action} failed");
}

/// Starts the server again even if the test fails half-way, so later tests find it up.
struct RestartOnDrop<'a> {
    ctl: &'a str,
    stopped: bool,
}

impl Drop for RestartOnDrop<'_> {
    fn drop(&mut self) {
        if self.stopped {
            control(self.ctl, "start");
        }
    }
}

/// Signs `username` up (password "long enough") and returns the new user's id.
async fn sign_up(client: &reqwest::Client, base: &str, username: &str) -> i64 {
    let created = client
        .post(format!("{base}/users"))
        .json(&json!({"username": username, "email": format!("{username}@example.com"), "password": "long enough"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201, "signing {username} up");
    created.json::<Value>().await.expect("JSON")["id"]
        .as_i64()
        .expect("id")
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.expect("the service answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// The database stops mid-test: every route that needs it answers a 503 problem and
/// `/readyz` fails, while the rest of the service keeps working. It comes back: the same
/// process serves 200s again, with the data intact, without a restart.
async fn outage_and_recovery(kind: Kind, test: &str) {
    let _serial = SERIAL.lock().await;
    let Some(ctl) = server_setting(kind.ctl_variable(), test) else {
        return;
    };
    let Some(db) = TestDb::fresh(kind, test) else {
        return;
    };
    let service = service_on(&db, 2, 1_000).await;
    let base = service.base_url();
    let client = reqwest::Client::new();
    let id = sign_up(&client, &base, "survivor").await;
    let needs_db = [
        format!("{base}/users/{id}"),
        format!("{base}/users?limit=5"),
        format!("{base}/db/async/users/{id}"),
        format!("{base}/db/raw/users/{id}"),
        format!("{base}/db/blocking/users/{id}"),
        format!("{base}/db/spawn-blocking/users/{id}"),
    ];
    for url in &needs_db {
        assert_eq!(get(&client, url).await.0, 200, "{url} before the outage");
    }
    assert_eq!(get(&client, &format!("{base}/readyz")).await.0, 200);

    // Queries in flight when the server goes away fail as "unavailable" too, not as 500s:
    // the database died under them, nothing is wrong with the request or the service.
    let in_flight: Vec<_> = ["async", "raw", "spawn-blocking"]
        .into_iter()
        .map(|variant| {
            let client = client.clone();
            let url = format!("{base}/db/{variant}/sleep?ms=5000");
            tokio::spawn(async move { (get(&client, &url).await, url) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    control(&ctl, "stop");
    let mut restart = RestartOnDrop {
        ctl: &ctl,
        stopped: true,
    };
    for task in in_flight {
        let ((status, problem), url) = task.await.expect("request task");
        assert_eq!(
            status, 503,
            "{url} when the database stopped under it: {problem}"
        );
    }
    for url in &needs_db {
        let (status, problem) = get(&client, url).await;
        assert_eq!(status, 503, "{url} while the database is down: {problem}");
        assert_eq!(problem["status"], 503, "{problem}");
    }
    let (status, problem) = get(&client, &format!("{base}/readyz")).await;
    assert_eq!(status, 503, "readyz while the database is down: {problem}");
    let signup = client
        .post(format!("{base}/users"))
        .json(
            &json!({"username": "latecomer", "email": "l@example.com", "password": "long enough"}),
        )
        .send()
        .await
        .expect("create");
    assert_eq!(signup.status(), 503);
    assert_eq!(
        signup.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..]),
        "a 503 says when to ask again"
    );
    let signup: serde_json::Value = signup.json().await.expect("a problem document");
    let detail = signup["detail"].as_str().unwrap_or_default();
    assert!(
        detail.ends_with(stallscope::db::DB_UNAVAILABLE) && !detail.contains("127.0.0.1"),
        "the driver's words stay in the log: {signup}"
    );
    assert_eq!(
        get(&client, &format!("{base}/healthz")).await.0,
        200,
        "liveness is not readiness"
    );
    assert_eq!(
        get(&client, &format!("{base}/sleep/async?ms=1")).await.0,
        200
    );

    control(&ctl, "start");
    restart.stopped = false;
    let back = Instant::now();
    loop {
        if get(&client, &format!("{base}/readyz")).await.0 == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "readyz still failing 15 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for url in &needs_db {
        let (status, body) = get(&client, url).await;
        assert_eq!(status, 200, "{url} after the database came back: {body}");
    }
    let (_, user) = get(&client, &format!("{base}/users/{id}")).await;
    assert_eq!(user["username"], "survivor");
}

#[tokio::test]
async fn postgres_outage_and_recovery() {
    outage_and_recovery(Kind::Postgres, "postgres_outage_and_recovery").await;
}

#[tokio::test]
async fn mysql_outage_and_recovery() {
    outage_and_recovery(Kind::Mysql, "mysql_outage_and_recovery").await;
}

/// `POST /login` costs the same whether the username exists (wrong password) or not: both
/// run one argon2id verification, the unknown user's against a dummy hash. A shortcut for
/// unknown users would answer in a fraction of the time and reveal which usernames exist.
#[tokio::test]
async fn login_timing_does_not_reveal_usernames() {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::fresh(Kind::Sqlite, "login_timing_does_not_reveal_usernames") else {
        return;
    };
    let mut args = serve_args(2);
    args.database.database_url = db.url.clone();
    // Fourteen attempts from one client, seven per name: past the default rate limits.
    args.limits.login_limit_per_username = 600;
    args.limits.login_limit_per_client = 600;
    let service = start(&args).await;
    let client = reqwest::Client::new();
    let base = service.base_url();
    let created = client
        .post(format!("{base}/users"))
        .json(&json!({"username": "erin", "email": "e@example.com", "password": "the real one"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let median_ms = |username: &'static str| {
        let client = client.clone();
        let url = format!("{base}/login");
        async move {
            let mut times = Vec::new();
            for _ in 0..7 {
                let started = Instant::now();
                let response = client
                    .post(&url)
                    .json(&json!({"username": username, "password": "not the password"}))
                    .send()
                    .await
                    .expect("login");
                assert_eq!(response.status(), 401);
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            times[times.len() / 2]
        }
    };
    let known = median_ms("erin").await;
    let unknown = median_ms("nobody-by-this-name").await;
    assert!(
        unknown > 0.5 * known && unknown < 2.0 * known,
        "wrong password for a real user: {known:.1} ms; unknown user: {unknown:.1} ms"
    );
}

/// A wrong-password flood from one address does not hold up real users: 200 concurrent bad
/// logins from 127.0.0.2 are answered 429 past the per-client burst, before any hashing, and
/// twenty real logins from addresses of their own meanwhile stay under 200 ms at p95. (Without the limit
/// the flood queued 200 argon2 verifications ahead of them: seconds.)
#[tokio::test]
async fn a_login_flood_from_one_address_leaves_real_logins_fast() {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::fresh(Kind::Sqlite, "a_login_flood_from_one_address") else {
        return;
    };
    let service = service_on(&db, 2, 5_000).await;
    let base = service.base_url();
    let real = reqwest::Client::new();
    for i in 0..10 {
        sign_up(&real, &base, &format!("real_{i}")).await;
    }
    let attacker = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (attacker, url) = (attacker.clone(), format!("{base}/login"));
        flood.spawn(async move {
            let response = attacker
                .post(url)
                .json(&json!({"username": format!("guess_{i}"), "password": "123456"}))
                .send()
                .await
                .expect("an answer");
            let retry_after = response.headers().contains_key("retry-after");
            (response.status().as_u16(), retry_after)
        });
    }
    let mut times = Vec::new();
    for i in 0..20u8 {
        // Each real user from an address of their own, as real users are.
        let user = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 1, i]))
            .build()
            .expect("client");
        let started = Instant::now();
        let response = user
            .post(format!("{base}/login"))
            .json(&json!({"username": format!("real_{}", i % 10), "password": "long enough"}))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), 200);
        times.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(answer) = flood.join_next().await {
        let (status, retry_after) = answer.expect("task");
        assert!(status == 401 || (status == 429 && retry_after), "{status}");
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert!(
        statuses.get(&429).is_some_and(|n| *n >= 190),
        "{statuses:?}"
    );
    times.sort();
    let p95 = times[times.len() * 95 / 100 - 1];
    assert!(
        p95 < Duration::from_millis(200),
        "real logins during the flood: p95 {p95:?} (all: {times:?})"
    );
}

/// Thaws the server even if the test fails half-way, so later tests find it answering.
struct ThawOnDrop<'a>(&'a str);

impl Drop for ThawOnDrop<'_> {
    fn drop(&mut self) {
        control(self.0, "thaw");
    }
}

/// PostgreSQL frozen (SIGSTOP: connections stay open, nothing answers). Every request that
/// awaits the database answers 503 within the query timeout (plus the wait it asked for) and
/// a second: an in-flight `pg_sleep`, the async and raw lookups, the users API, a login, the
/// spawn-blocking variant (its thread waits on) and `/readyz`. The blocking variants are the
/// exception by design: their worker sits in the driver until the database answers. Thawed,
/// the same process serves 200s again.
#[tokio::test]
async fn a_frozen_postgres_is_answered_503_within_the_query_timeout() {
    let _serial = SERIAL.lock().await;
    let test = "a_frozen_postgres";
    let Some(ctl) = server_setting(Kind::Postgres.ctl_variable(), test) else {
        return;
    };
    let Some(db) = TestDb::fresh(Kind::Postgres, test) else {
        return;
    };
    let mut args = serve_args(2);
    args.database.database_url = db.url.clone();
    args.database.db_pool_size = 4;
    args.database.db_acquire_timeout_ms = 1_000;
    args.database.db_query_timeout_ms = 1_500;
    let service = start(&args).await;
    let base = service.base_url();
    let client = reqwest::Client::new();
    let id = sign_up(&client, &base, "frozen").await;
    let bounded = [
        (format!("{base}/db/async/users/{id}"), 0),
        (format!("{base}/db/raw/users/{id}"), 0),
        (format!("{base}/db/spawn-blocking/users/{id}"), 0),
        (format!("{base}/users/{id}"), 0),
        (format!("{base}/users?limit=5"), 0),
        (format!("{base}/readyz"), 0),
        (format!("{base}/db/async/sleep?ms=500"), 500),
    ];
    for (url, _) in &bounded {
        assert_eq!(get(&client, url).await.0, 200, "{url} before the freeze");
    }
    let in_flight = {
        let client = client.clone();
        let url = format!("{base}/db/async/sleep?ms=500");
        tokio::spawn(async move {
            let started = Instant::now();
            (get(&client, &url).await.0, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    control(&ctl, "freeze");
    let thaw = ThawOnDrop(&ctl);
    let mut checks = tokio::task::JoinSet::new();
    for (url, ms) in bounded {
        let client = client.clone();
        checks.spawn(async move {
            let started = Instant::now();
            let (status, _) = get(&client, &url).await;
            (url, ms, status, started.elapsed())
        });
    }
    let login = {
        let client = client.clone();
        let url = format!("{base}/login");
        tokio::spawn(async move {
            let started = Instant::now();
            let status = client
                .post(url)
                .json(&json!({"username": "frozen", "password": "long enough"}))
                .send()
                .await
                .expect("an answer")
                .status()
                .as_u16();
            (status, started.elapsed())
        })
    };
    let within = |ms: u64| Duration::from_millis(1_500 + ms + 1_000);
    let (status, took) = in_flight.await.expect("task");
    assert!(
        status == 503 && took < within(500),
        "in-flight pg_sleep: {status} after {took:?}"
    );
    while let Some(check) = checks.join_next().await {
        let (url, ms, status, took) = check.expect("task");
        assert!(
            status == 503 && took < within(ms),
            "{url}: {status} after {took:?}"
        );
    }
    let (status, took) = login.await.expect("task");
    assert!(
        status == 503 && took < within(0),
        "login: {status} after {took:?}"
    );
    drop(thaw);
    let back = Instant::now();
    while get(&client, &format!("{base}/readyz")).await.0 != 200 {
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "not ready 15 s after the thaw"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for path in [format!("/db/async/users/{id}"), format!("/users/{id}")] {
        let (status, body) = get(&client, &format!("{base}{path}")).await;
        assert_eq!(status, 200, "{path} after the thaw: {body}");
    }
}
