//! The OpenAPI document behind `/docs` and `/openapi.json`.
//!
//! The handlers' `#[utoipa::path]` attributes describe each operation; what depends on how
//! this instance was started (the caps on `ms` and `iterations`, and so their defaults) is
//! filled in here, so the document states the bounds the handlers really enforce.

use axum::http::{StatusCode, header};
use utoipa::OpenApi;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{Content, RefOr};

use super::{cpu, db, health, metrics, sleep, upstream, users};
use crate::config::{Bounds, LimitArgs};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "stallscope",
        description = "Executor stalls made visible: each lesson has a correct and a stalling variant. Pick a variant, press Execute, and compare `elapsed_ms` and `work_thread`; send two at once to see the stalling one serialise them."
    ),
    paths(
        health::healthz,
        health::readyz,
        health::hello,
        metrics::metrics,
        sleep::handler,
        cpu::handler,
        upstream::handler,
        db::user,
        db::sleep,
        users::create,
        users::fetch,
        users::list,
        users::update,
        users::remove,
        users::login
    ),
    components(schemas(
        crate::error::FieldError,
        super::account_fields::CreateUser,
        super::account_fields::UpdateUser,
        super::account_fields::Login
    )),
    tags(
        (name = "sleep", description = "Waiting: tokio::time::sleep vs std::thread::sleep"),
        (name = "cpu", description = "Computing: inline hashing vs the blocking pool vs rayon"),
        (name = "upstream", description = "Calling a slow service: reqwest vs a blocking client"),
        (name = "db", description = "Querying a database: diesel-async vs a sync diesel connection"),
        (name = "users", description = "CRUD on users (diesel models through diesel-async) and login"),
        (name = "service", description = "Health and baseline"),
    )
)]
struct ApiDoc;

/// The document for a service started with `limits`.
pub fn document(limits: &LimitArgs) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            state_bounds(operation, limits);
            if can_fail_internally(operation) {
                add_internal_error(operation);
            }
            // Every route is behind the telemetry route layer's in-flight cap.
            add_reason(
                operation,
                StatusCode::SERVICE_UNAVAILABLE,
                "the service already has --max-in-flight requests in flight",
            );
            if is_timed(operation) {
                add_reason(
                    operation,
                    StatusCode::GATEWAY_TIMEOUT,
                    "the request took longer than --request-timeout-ms",
                );
            }
            announce_retry_after(operation);
        }
    }
    link_sign_up(&mut doc);
    doc
}

/// What a client can do with a new account: fetch it by the id in the answer, and log in
/// with the credentials it just sent. Clients and fuzzers (schemathesis' stateful phase)
/// follow these links, so `/login` is reached with a password that matches.
fn link_sign_up(doc: &mut utoipa::openapi::OpenApi) {
    let Some(RefOr::T(created)) = doc
        .paths
        .paths
        .get_mut("/users")
        .and_then(|item| item.post.as_mut())
        .and_then(|create| create.responses.responses.get_mut("201"))
    else {
        return;
    };
    let fetch = LinkBuilder::new()
        .operation_id("get_user")
        .parameter("id", "$response.body#/id")
        .description("The new user, by the `id` in this answer")
        .build();
    let login = LinkBuilder::new()
        .operation_id("login")
        .request_body(Some(serde_json::json!({
            "username": "$request.body#/username",
            "password": "$request.body#/password",
        })))
        .description("Log in with the username and password just registered")
        .build();
    created.links.insert("GetUser".to_owned(), RefOr::T(fetch));
    created.links.insert("LogIn".to_owned(), RefOr::T(login));
}

/// `minimum`, `maximum` and `default` of the numeric lesson parameters, from the same
/// [`Bounds`] the handlers parse them with.
fn state_bounds(operation: &mut Operation, limits: &LimitArgs) {
    for parameter in operation.parameters.iter_mut().flatten() {
        let RefOr::T(parameter) = parameter else {
            continue;
        };
        let bounds: Bounds = match parameter.name.as_str() {
            "ms" => limits.ms(),
            "iterations" => limits.cpu_iterations(),
            _ => continue,
        };
        if let Some(RefOr::T(Schema::Object(schema))) = &mut parameter.schema {
            schema.minimum = Some(bounds.min.into());
            schema.maximum = Some(bounds.max.into());
            schema.default = Some(bounds.default.into());
        }
    }
}

/// Every lesson and `/users` operation hands work to a pool (blocking threads, rayon, the
/// password hasher) or a database, where a bug or an unexpected database error is a 500.
fn can_fail_internally(operation: &Operation) -> bool {
    operation
        .tags
        .iter()
        .flatten()
        .any(|tag| matches!(tag.as_str(), "sleep" | "cpu" | "upstream" | "db" | "users"))
}

/// The routes `Observed::on` puts under `--request-timeout-ms`: the `/users` operations
/// (the lessons wait on purpose, the probes never do).
fn is_timed(operation: &Operation) -> bool {
    operation.tags.iter().flatten().any(|tag| tag == "users")
}

/// Adds `reason` to the operation's `status` response: "A; or B" when the status is listed
/// already (one row per status, naming every reason), a new problem response otherwise.
fn add_reason(operation: &mut Operation, status: StatusCode, reason: &str) {
    match operation.responses.responses.get_mut(status.as_str()) {
        Some(RefOr::T(response)) => {
            response.description = format!("{}; or {reason}", response.description);
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let mut description = reason.to_owned();
            if let Some(first) = description.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            operation
                .responses
                .responses
                .insert(status.as_str().to_owned(), RefOr::T(problem(description)));
        }
    }
}

/// Every 503 and 429 says when to ask again.
fn announce_retry_after(operation: &mut Operation) {
    for (status, response) in &mut operation.responses.responses {
        if let ("503" | "429", RefOr::T(response)) = (status.as_str(), response) {
            let header = HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                ))
                .description(Some("Seconds to wait before asking again; always sent"))
                .build();
            response
                .headers
                .insert(header::RETRY_AFTER.as_str().to_owned(), RefOr::T(header));
        }
    }
}

fn problem(description: String) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            // Registered by the operations' own problem responses (`body = ProblemDoc`).
            Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "ProblemDoc",
            )))),
        )
        .build()
}

fn add_internal_error(operation: &mut Operation) {
    let response = problem(
        "A bug on our side, or an unexpected database error; the details are logged, never sent"
            .to_owned(),
    );
    operation
        .responses
        .responses
        .entry("500".to_owned())
        .or_insert(RefOr::T(response));
}
