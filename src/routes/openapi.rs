//! The OpenAPI document behind `/docs` and `/openapi.json`.
//!
//! The handlers' `#[utoipa::path]` attributes describe each operation; what depends on how
//! this instance was started (the caps on `ms` and `iterations`, and so their defaults) is
//! filled in here, so the document states the bounds the handlers really enforce.

use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::Schema;
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
    components(schemas(crate::error::FieldError)),
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
        }
    }
    doc
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

fn add_internal_error(operation: &mut Operation) {
    let response = ResponseBuilder::new()
        .description("A bug on our side, or an unexpected database error; the details are logged, never sent")
        .content(
            "application/problem+json",
            // Registered by the operations' own problem responses (`body = ProblemDoc`).
            Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "ProblemDoc",
            )))),
        )
        .build();
    operation
        .responses
        .responses
        .entry("500".to_owned())
        .or_insert(RefOr::T(response));
}
