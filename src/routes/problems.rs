//! The problem responses the OpenAPI document lists, each declared once and named by the
//! routes that may answer it (`responses((status = 200, …), UnknownVariant, …)`).

use utoipa::IntoResponses;

use crate::error::ProblemDoc;

macro_rules! problems {
    ($($(#[doc = $doc:literal])* $name:ident = $status:literal, $description:literal;)+) => {$(
        $(#[doc = $doc])*
        #[derive(IntoResponses)]
        #[response(status = $status, description = $description, content_type = "application/problem+json")]
        #[allow(dead_code)] // only its schema is used
        pub struct $name(ProblemDoc);
    )+};
}

problems! {
    /// A lesson's `{variant}` that the lesson does not have.
    UnknownVariant = 404, "Unknown variant: the problem lists the valid ones";
    /// A stalling variant on a service that refuses them.
    StallDemosOff = 403, "A stalling variant, and this service runs with --no-stall-demos";
    /// A stalling variant while its lesson's slots are all taken.
    StallDemosBusy = 503, "The lesson's stalling variants are at their cap (--stall-demo-cap): retry after `Retry-After`";
    /// `?ms=` missing its range.
    BadMs = 400, "Bad `ms`: not a whole number, or out of range";
    /// `?iterations=` missing its range.
    BadIterations = 400, "Bad `iterations`: not a whole number, or out of range";
    /// A `{id}` that is not a user id.
    BadId = 400, "Bad id: ids are whole numbers from 1";
    /// `{id}` names no user.
    NoSuchUser = 404, "No such user";
    /// A body over the limit.
    BodyTooLarge = 413, "Body too large";
    /// A body that is not `application/json`.
    NotJson = 415, "Not application/json";
    /// The database did not answer in time.
    DatabaseUnreachable = 503, "Database unreachable";
    /// The 503s of a route that hashes a password: the database, or the hasher's queue.
    DatabaseUnreachableOrHasherBusy = 503, "Database unreachable, or the password hasher's queue is full or no hashing slot came free within 2 s";
    /// A database lesson's 503s: the database, or the stalling variants' cap.
    DatabaseUnreachableOrDemosBusy = 503, "Database unreachable, or the lesson's stalling variants are at their cap (--stall-demo-cap): retry after `Retry-After`";
}
