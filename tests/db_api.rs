//! The users API and the database lesson routes, the same suite on SQLite, PostgreSQL and
//! MySQL (see `common::db` for where the servers come from and when a backend is skipped).
//!
//! Each test gets a fresh database and a real service in-process (own thread, own runtime),
//! and talks to it over HTTP.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;

use common::db::{Kind, TestDb};
use common::{TestService, serve_args, start};
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// The service on a fresh database of `kind`, with a client that remembers every body it
/// received (to prove no secret ever leaves). `None` when the backend is skipped.
async fn api(kind: Kind, test: &str) -> Option<Api> {
    let db = TestDb::fresh(kind, test)?;
    let mut args = serve_args(2);
    args.database.database_url = db.url.clone();
    args.database.db_pool_size = 8;
    let service = start(&args).await;
    Some(Api {
        base: service.base_url(),
        client: reqwest::Client::new(),
        bodies: Mutex::new(Vec::new()),
        kind,
        _service: service,
        _db: db,
    })
}

struct Api {
    base: String,
    client: reqwest::Client,
    bodies: Mutex<Vec<String>>,
    kind: Kind,
    // Field order matters: the service stops before its database is dropped.
    _service: TestService,
    _db: TestDb,
}

impl Api {
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("body read");
        self.bodies.lock().expect("not poisoned").push(text.clone());
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()))
        };
        (status, value)
    }

    async fn json(&self, method: Method, path: &str, body: &Value) -> (StatusCode, Value) {
        let bytes = serde_json::to_vec(body).expect("JSON");
        self.send(method, path, Some("application/json"), Some(bytes))
            .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None, None).await
    }

    async fn create(&self, username: &str) -> Value {
        let (status, body) = self
            .json(
                Method::POST,
                "/users",
                &json!({"username": username, "email": format!("{username}@example.com"), "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{}: {body}", self.kind.name());
        body
    }

    /// Every user, following `next_cursor` page by page.
    async fn all_users(&self) -> Vec<Value> {
        let mut users = Vec::new();
        let mut path = "/users?limit=100".to_owned();
        loop {
            let (status, page) = self.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            users.extend(page["users"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_i64() {
                Some(cursor) => path = format!("/users?limit=100&cursor={cursor}"),
                None => return users,
            }
        }
    }
}

fn failing_fields(problem: &Value) -> BTreeSet<String> {
    problem["invalid_fields"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| f["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Create, read, find, list, update, log in, delete: the whole life of a user.
async fn crud_round_trip(kind: Kind, test: &str) {
    let Some(api) = api(kind, test).await else {
        return;
    };
    let alice = api.create("alice").await;
    let id = alice["id"].as_i64().expect("id");
    assert_eq!(alice["username"], "alice");
    assert_eq!(alice["email"], "alice@example.com");
    assert!(
        alice["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let (status, got) = api.get(&format!("/users/{id}")).await;
    assert_eq!((status, &got), (StatusCode::OK, &alice));

    let (status, found) = api.get("/users?username=alice").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["users"], json!([alice]));
    let (_, nobody) = api.get("/users?username=bob").await;
    assert_eq!(nobody["users"], json!([]));

    // Pagination: 5 more users, pages of 2, in id order, cursors chaining to the end.
    for name in ["user1", "user2", "user3", "user4", "user5"] {
        api.create(name).await;
    }
    let mut seen = Vec::new();
    let mut path = "/users?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let users = page["users"].as_array().expect("users");
        assert!(users.len() <= 2);
        seen.extend(
            users
                .iter()
                .filter_map(|u| u["username"].as_str().map(str::to_owned)),
        );
        pages += 1;
        match page["next_cursor"].as_i64() {
            Some(cursor) => path = format!("/users?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["alice", "user1", "user2", "user3", "user4", "user5"]);
    assert_eq!(pages, 3);

    // The lesson routes read the same row, every variant.
    for variant in ["async", "raw", "blocking", "spawn-blocking"] {
        let (status, report) = api.get(&format!("/db/{variant}/users/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{variant}: {report}");
        assert_eq!(report["output"]["user"], alice, "{variant}");
        assert_eq!(report["output"]["backend"], kind.name());
        let (status, problem) = api.get(&format!("/db/{variant}/users/999999")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{variant}: {problem}");
        let (status, report) = api.get(&format!("/db/{variant}/sleep?ms=20")).await;
        assert_eq!(status, StatusCode::OK, "{variant}: {report}");
        assert!(
            report["elapsed_ms"].as_f64().is_some_and(|ms| ms >= 19.0),
            "{report}"
        );
    }

    // Update: email, then password; the username stays.
    let (status, updated) = api
        .json(
            Method::PATCH,
            &format!("/users/{id}"),
            &json!({"email": "new@example.org"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["email"], "new@example.org");
    assert_eq!(updated["username"], "alice");
    assert_eq!(updated["created_at"], alice["created_at"]);
    assert!(updated["updated_at"].as_str() > alice["updated_at"].as_str());
    let login = |password: &str| json!({"username": "alice", "password": password});
    let (status, ok) = api.json(Method::POST, "/login", &login(PASSWORD)).await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    assert_eq!(ok["user"]["id"], id);
    let (status, _) = api
        .json(
            Method::PATCH,
            &format!("/users/{id}"),
            &json!({"password": "a new passphrase"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = api.json(Method::POST, "/login", &login(PASSWORD)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    let (status, _) = api
        .json(Method::POST, "/login", &login("a new passphrase"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, unknown) = api
        .json(
            Method::POST,
            "/login",
            &json!({"username": "nobody", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        unknown["detail"], problem["detail"],
        "the same answer either way"
    );

    // Delete, then it is gone everywhere.
    let (status, _) = api
        .send(Method::DELETE, &format!("/users/{id}"), None, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.get(&format!("/users/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .send(Method::DELETE, &format!("/users/{id}"), None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .json(
            Method::PATCH,
            &format!("/users/{id}"),
            &json!({"email": "x@y.zz"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(api.all_users().await.len(), 5);
}

/// Every kind of bad input, with its status and (for 422s) exactly the failing fields.
async fn validation_table(kind: Kind, test: &str) {
    let Some(api) = api(kind, test).await else {
        return;
    };
    let taken = api.create("taken").await;
    let id = taken["id"].as_i64().expect("id");
    let user_path = format!("/users/{id}");
    let json_ct = Some("application/json");
    let body = |v: Value| Some(serde_json::to_vec(&v).expect("JSON"));
    let good = || json!({"username": "newuser", "email": "n@example.com", "password": PASSWORD});
    let with = |key: &str, value: Value| {
        let mut v = good();
        v[key] = value;
        body(v)
    };
    type Case<'a> = (
        &'a str,
        Method,
        String,
        Option<&'a str>,
        Option<Vec<u8>>,
        u16,
        &'a [&'a str],
    );
    let cases: Vec<Case> = vec![
        (
            "empty object",
            Method::POST,
            "/users".into(),
            json_ct,
            body(json!({})),
            422,
            &["username", "email", "password"],
        ),
        (
            "all three invalid",
            Method::POST,
            "/users".into(),
            json_ct,
            body(json!({"username": "a b", "email": "not-an-email", "password": "short"})),
            422,
            &["username", "email", "password"],
        ),
        (
            "username too short",
            Method::POST,
            "/users".into(),
            json_ct,
            with("username", json!("ab")),
            422,
            &["username"],
        ),
        (
            "username too long",
            Method::POST,
            "/users".into(),
            json_ct,
            with("username", json!("x".repeat(65))),
            422,
            &["username"],
        ),
        (
            "username with a quote",
            Method::POST,
            "/users".into(),
            json_ct,
            with("username", json!("x' OR '1'='1")),
            422,
            &["username"],
        ),
        (
            "email without domain",
            Method::POST,
            "/users".into(),
            json_ct,
            with("email", json!("a@b")),
            422,
            &["email"],
        ),
        (
            "password of 7",
            Method::POST,
            "/users".into(),
            json_ct,
            with("password", json!("1234567")),
            422,
            &["password"],
        ),
        (
            "wrong types",
            Method::POST,
            "/users".into(),
            json_ct,
            body(json!({"username": 5, "email": null, "password": ["x"]})),
            422,
            &["username", "email", "password"],
        ),
        (
            "unknown field",
            Method::POST,
            "/users".into(),
            json_ct,
            with("admin", json!(true)),
            422,
            &["admin"],
        ),
        (
            "not an object",
            Method::POST,
            "/users".into(),
            json_ct,
            body(json!(["alice"])),
            422,
            &["body"],
        ),
        (
            "malformed JSON",
            Method::POST,
            "/users".into(),
            json_ct,
            Some(b"{\"username\": ".to_vec()),
            400,
            &[],
        ),
        (
            "no content type",
            Method::POST,
            "/users".into(),
            None,
            body(good()),
            415,
            &[],
        ),
        (
            "text/plain",
            Method::POST,
            "/users".into(),
            Some("text/plain"),
            body(good()),
            415,
            &[],
        ),
        (
            "oversized",
            Method::POST,
            "/users".into(),
            json_ct,
            body(
                json!({"username": "big", "email": "b@example.com", "password": "p".repeat(40_000)}),
            ),
            413,
            &[],
        ),
        (
            "a bad limit beside a username",
            Method::GET,
            "/users?username=taken&limit=-1273".into(),
            None,
            None,
            400,
            &[],
        ),
        (
            "duplicate username",
            Method::POST,
            "/users".into(),
            json_ct,
            with("username", json!("taken")),
            409,
            &[],
        ),
        (
            "patch nothing",
            Method::PATCH,
            user_path.clone(),
            json_ct,
            body(json!({})),
            422,
            &["body"],
        ),
        (
            "patch the username",
            Method::PATCH,
            user_path.clone(),
            json_ct,
            body(json!({"username": "other"})),
            422,
            &["username"],
        ),
        (
            "patch bad values",
            Method::PATCH,
            user_path.clone(),
            json_ct,
            body(json!({"email": "nope", "password": "short"})),
            422,
            &["email", "password"],
        ),
        (
            "patch a bad id",
            Method::PATCH,
            "/users/abc".into(),
            json_ct,
            body(json!({"email": "a@b.co"})),
            400,
            &[],
        ),
        (
            "get a bad id",
            Method::GET,
            "/users/abc".into(),
            None,
            None,
            400,
            &[],
        ),
        (
            "get id 0",
            Method::GET,
            "/users/0".into(),
            None,
            None,
            400,
            &[],
        ),
        (
            "get a missing id",
            Method::GET,
            "/users/999999".into(),
            None,
            None,
            404,
            &[],
        ),
        (
            "delete a missing id",
            Method::DELETE,
            "/users/999999".into(),
            None,
            None,
            404,
            &[],
        ),
        (
            "limit 0",
            Method::GET,
            "/users?limit=0".into(),
            None,
            None,
            400,
            &[],
        ),
        (
            "limit 101",
            Method::GET,
            "/users?limit=101".into(),
            None,
            None,
            400,
            &[],
        ),
        (
            "negative cursor",
            Method::GET,
            "/users?cursor=-1".into(),
            None,
            None,
            400,
            &[],
        ),
        (
            "login without password",
            Method::POST,
            "/login".into(),
            json_ct,
            body(json!({"username": "taken"})),
            422,
            &["password"],
        ),
        (
            "login, wrong password",
            Method::POST,
            "/login".into(),
            json_ct,
            body(json!({"username": "taken", "password": "wrong password"})),
            401,
            &[],
        ),
        (
            "db route, bad id",
            Method::GET,
            "/db/async/users/1%20OR%201=1".into(),
            None,
            None,
            400,
            &[],
        ),
        (
            "db route, unknown variant",
            Method::GET,
            "/db/orm/users/1".into(),
            None,
            None,
            404,
            &[],
        ),
        (
            "db sleep, bad ms",
            Method::GET,
            "/db/raw/sleep?ms=-5".into(),
            None,
            None,
            400,
            &[],
        ),
        (
            "users, wrong method",
            Method::PUT,
            "/users".into(),
            json_ct,
            body(good()),
            405,
            &[],
        ),
    ];
    for (what, method, path, content_type, body, status, fields) in cases {
        let (got, problem) = api.send(method, &path, content_type, body).await;
        assert_eq!(got.as_u16(), status, "{} {what}: {problem}", kind.name());
        assert_eq!(
            problem["status"], status,
            "{what}: problem+json expected, got {problem}"
        );
        let expected: BTreeSet<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        assert_eq!(failing_fields(&problem), expected, "{what}: {problem}");
    }
    // Nothing above created a user.
    assert_eq!(api.all_users().await.len(), 1);
}

/// 200 sign-ups at once, all different: 200 rows, no more, no less. Past the password-hashing
/// queue a sign-up is a 503 with `Retry-After`; a client that waits that long and sends it
/// again gets its account, as every one here does.
async fn concurrent_distinct_creates(kind: Kind, test: &str) {
    let Some(api) = api(kind, test).await else {
        return;
    };
    let api = &api;
    let statuses = join_all((0..200).map(|i| async move {
        let body = json!({"username": format!("user{i:03}"), "email": format!("u{i}@example.com"), "password": PASSWORD});
        let mut answer = api.json(Method::POST, "/users", &body).await;
        for _ in 0..20 {
            if answer.0 != StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            answer = api.json(Method::POST, "/users", &body).await;
        }
        answer
    }))
    .await;
    for (status, body) in &statuses {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
    }
    let users = api.all_users().await;
    assert_eq!(users.len(), 200);
    let names: BTreeSet<&str> = users
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(names.len(), 200);
    let ids: BTreeSet<i64> = users.iter().filter_map(|u| u["id"].as_i64()).collect();
    assert_eq!(ids.len(), 200);
}

/// 50 sign-ups at once for one username: the unique constraint lets exactly one through.
async fn concurrent_same_username(kind: Kind, test: &str) {
    let Some(api) = api(kind, test).await else {
        return;
    };
    let api = &api;
    let outcomes = join_all((0..50).map(|i| async move {
        api.json(
            Method::POST,
            "/users",
            &json!({"username": "contested", "email": format!("c{i}@example.com"), "password": PASSWORD}),
        )
        .await
    }))
    .await;
    let created = outcomes
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let conflicts = outcomes
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 49), "{outcomes:?}");
    let users = api.all_users().await;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["username"], "contested");
}

/// Neither the password nor its hash appears in any response body, of any route, including
/// `/metrics`; and user input in a query is a value, never SQL.
async fn secrets_never_leave_and_input_is_never_sql(kind: Kind, test: &str) {
    let Some(api) = api(kind, test).await else {
        return;
    };
    let user = api.create("carol").await;
    let id = user["id"].as_i64().expect("id");
    let injection = "x' OR '1'='1";
    let (status, found) = api
        .get(&format!("/users?username={}", urlencode(injection)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        found["users"],
        json!([]),
        "the injection matched rows: {found}"
    );
    let (status, _) = api
        .json(
            Method::POST,
            "/login",
            &json!({"username": injection, "password": injection}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = api
        .json(
            Method::POST,
            "/login",
            &json!({"username": "carol' --", "password": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let paths = [
        format!("/users/{id}"),
        "/users".to_owned(),
        "/users?username=carol".to_owned(),
        format!("/db/async/users/{id}"),
        format!("/db/raw/users/{id}"),
        format!("/db/blocking/users/{id}"),
        format!("/db/spawn-blocking/users/{id}"),
        "/metrics".to_owned(),
    ];
    for path in &paths {
        let (status, _) = api.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let login = json!({"username": "carol", "password": PASSWORD});
    let (status, _) = api.json(Method::POST, "/login", &login).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .json(
            Method::PATCH,
            &format!("/users/{id}"),
            &json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A validation failure on the password must not quote it either.
    let (status, _) = api
        .json(
            Method::PATCH,
            &format!("/users/{id}"),
            &json!({"password": "tiny7ch"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let bodies = api.bodies.lock().expect("not poisoned").clone();
    assert!(bodies.len() >= 15);
    for body in &bodies {
        for secret in [PASSWORD, "tiny7ch", "$argon2", "argon2id", "password_hash"] {
            assert!(!body.contains(secret), "`{secret}` leaked in: {body}");
        }
    }
}

/// Text one database refuses or compares loosely is answered alike on all three: a NUL byte
/// (PostgreSQL refuses it) and a trailing space (MariaDB's collation ignores it) never reach a
/// lookup and never match, and an email with a control character is a 422, not a 500.
async fn text_a_database_would_refuse_or_pad_is_answered_alike(kind: Kind, test: &str) {
    let Some(api) = api(kind, test).await else {
        return;
    };
    let user = api.create("alice_x").await;
    let id = user["id"].as_i64().expect("id");
    for name in ["alice_x ", "a\u{0}b", "alice_x\u{0}"] {
        let (status, found) = api
            .get(&format!("/users?username={}", urlencode(name)))
            .await;
        assert_eq!(
            (status, &found["users"]),
            (StatusCode::OK, &json!([])),
            "{name:?}: {found}"
        );
        let login = json!({"username": name, "password": PASSWORD});
        let (status, problem) = api.json(Method::POST, "/login", &login).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name:?}: {problem}");
    }
    let nul_email =
        json!({"username": "bob_x", "email": "bob\u{0}@example.com", "password": PASSWORD});
    let (status, problem) = api.json(Method::POST, "/users", &nul_email).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(
        failing_fields(&problem),
        BTreeSet::from(["email".to_owned()])
    );
    let (status, problem) = api
        .json(
            Method::PATCH,
            &format!("/users/{id}"),
            &json!({"email": "x\u{7}@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    // The real name still works.
    let (status, found) = api.get("/users?username=alice_x").await;
    assert_eq!(
        (status, found["users"][0]["id"].as_i64()),
        (StatusCode::OK, Some(id))
    );
}

/// The pool and query metrics exist with bounded labels and count what happened.
async fn pool_and_query_metrics(kind: Kind, test: &str) {
    let Some(api) = api(kind, test).await else {
        return;
    };
    let user = api.create("dave").await;
    let id = user["id"].as_i64().expect("id");
    for variant in ["async", "blocking"] {
        let (status, _) = api.get(&format!("/db/{variant}/users/{id}")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let text = reqwest::get(format!("{}/metrics", api.base))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    let scrape = common::Scrape::parse(&text);
    let backend = kind.name();
    for pool in ["async", "sync"] {
        assert_eq!(
            scrape.value(
                "stallscope_db_pool_max_connections",
                &[("backend", backend), ("pool", pool)]
            ),
            8.0,
            "{pool}"
        );
        let open = scrape.value(
            "stallscope_db_pool_connections",
            &[("backend", backend), ("pool", pool)],
        );
        assert!(open >= 1.0, "{pool}: {open} connections");
        let (waits, _) = scrape.histogram(
            "stallscope_db_pool_acquire_wait_seconds",
            &[("backend", backend), ("pool", pool)],
        );
        assert!(waits >= 1.0, "{pool}");
    }
    for operation in ["user_insert", "user_get"] {
        let (count, _) = scrape.histogram(
            "stallscope_db_query_duration_seconds",
            &[("backend", backend), ("operation", operation)],
        );
        assert!(count >= 1.0, "{operation}");
    }
    for series in &scrape.samples {
        if series.metric.starts_with("stallscope_db_") {
            for (label, value) in &series.labels {
                let allowed: &[&str] = match label.as_str() {
                    "backend" => &["sqlite", "postgres", "mysql"],
                    "pool" => &["async", "sync"],
                    "state" => &["in_use", "idle"],
                    "operation" => &[
                        "ping",
                        "user_insert",
                        "user_get",
                        "user_find",
                        "user_list",
                        "user_update",
                        "user_delete",
                        "user_get_raw",
                        "sleep",
                        "sleep_raw",
                    ],
                    "le" => continue,
                    other => panic!("unexpected label {other} on {}", series.metric),
                };
                assert!(allowed.contains(&value.as_str()), "{label}={value}");
            }
        }
    }
}

/// A query abandoned half-way (its request cancelled: a timeout, a client gone) must not
/// break the SQLite connection it ran on. diesel-async's `SyncConnectionWrapper` shares the
/// connection with the blocking job until that job ends; handing it back to the pool earlier
/// makes the pool's next health check panic ("Cannot access shared transaction state").
/// `ObservedSpawn` waits for the job when its future is dropped, as diesel-async's own
/// spawner does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_abandoned_queries_leave_the_pool_healthy() {
    let db =
        TestDb::fresh(Kind::Sqlite, "sqlite_abandoned_queries").expect("SQLite is always there");
    let mut args = serve_args(2).database;
    args.database_url = db.url.clone();
    // One connection, so the next query gets the very connection the abandoned one used.
    args.db_pool_size = 1;
    let database = stallscope::db::Database::open(&args).expect("opens");
    for _ in 0..3 {
        let abandoned = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            stallscope::db::queries::sleep(&database, 300),
        )
        .await;
        assert!(
            abandoned.is_err(),
            "the query should still have been running"
        );
        let next = tokio::spawn({
            let database = database.clone();
            async move { stallscope::db::queries::sleep(&database, 1).await }
        })
        .await;
        assert!(
            matches!(next, Ok(Ok(_))),
            "the connection is unusable after an abandoned query: {next:?}"
        );
    }
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// One `#[tokio::test]` per backend for each suite function.
macro_rules! on_every_backend {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Kind::Sqlite, concat!("sqlite::", stringify!($name))).await;
            })+
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Kind::Postgres, concat!("postgres::", stringify!($name))).await;
            })+
        }
        mod mysql {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Kind::Mysql, concat!("mysql::", stringify!($name))).await;
            })+
        }
    };
}

/// One account per email on every backend, compared exactly as stored (MySQL's default
/// collation would ignore case; its binary one does not), and the 409 says which value is
/// taken, on sign-up and on a change of email.
async fn emails_are_unique_alike(kind: Kind, test: &str) {
    let Some(api) = api(kind, test).await else {
        return;
    };
    let sign_up = |username: &str, email: &Value| json!({"username": username, "email": email, "password": PASSWORD});
    // A 409 whose detail names the taken field.
    let taken = |(status, problem): (StatusCode, Value), field: &str| {
        assert_eq!(status, StatusCode::CONFLICT, "{}: {problem}", kind.name());
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{}: {problem}", kind.name());
    };
    let first = api.create("first").await;
    let second = api.create("second").await;
    let body = sign_up("third", &first["email"]);
    taken(api.json(Method::POST, "/users", &body).await, "email");
    let body = sign_up("first", &json!("other@example.com"));
    taken(api.json(Method::POST, "/users", &body).await, "username");
    let body = sign_up("shouting", &json!("FIRST@example.com"));
    let (status, body) = api.json(Method::POST, "/users", &body).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}: exact comparison: {body}",
        kind.name()
    );
    let second_path = format!("/users/{}", second["id"]);
    let change = |email: &Value| json!({ "email": email });
    taken(
        api.json(Method::PATCH, &second_path, &change(&first["email"]))
            .await,
        "email",
    );
    let (status, _) = api
        .json(Method::PATCH, &second_path, &change(&second["email"]))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}: keeping one's own email",
        kind.name()
    );
}

on_every_backend!(
    emails_are_unique_alike,
    crud_round_trip,
    validation_table,
    concurrent_distinct_creates,
    concurrent_same_username,
    secrets_never_leave_and_input_is_never_sql,
    text_a_database_would_refuse_or_pad_is_answered_alike,
    pool_and_query_metrics,
);
