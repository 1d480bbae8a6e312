//! The rules for a user's fields, declared once: the `/users` and `/login` handlers check
//! bodies with the functions here, and the OpenAPI document states the same rules as JSON
//! Schema built from the same constants, so a client (or a fuzzer) that follows the document
//! is accepted and one that breaks it is refused.
//!
//! The bodies are documented as types ([`CreateUser`], [`UpdateUser`], [`Login`]) but read as
//! raw JSON and checked field by field (see `users.rs`): a typed `Json<T>` would stop at the
//! first serde error, where a 422 here lists every failing field.

use std::ops::RangeInclusive;

use serde_json::json;
use utoipa::openapi::schema::AdditionalProperties;
use utoipa::openapi::schema::{KnownFormat, Object, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// Usernames: 3 to 64 characters, each an ASCII letter, a digit, `_`, `.` or `-`. ASCII
/// only, so a name has one spelling on every backend (no normalisation, no case folding).
pub const USERNAME_CHARS: RangeInclusive<usize> = 3..=64;
const USERNAME_PATTERN: &str = "^[A-Za-z0-9_.-]{3,64}$";
pub const USERNAME_RULE: &str =
    "must be 3 to 64 characters, each a letter A–Z or a–z, a digit, `_`, `.` or `-`";

/// Emails: the common ASCII form `local@domain.tld`: before the `@`, RFC 5321's dot-atom
/// (runs of letters, digits and ``!#$%&'*+/=?^_`{|}~-`` joined by single dots, 64 characters
/// at most); after it, two or more DNS labels (letters, digits and inner `-`, 63 characters
/// at most each); 254 characters in all. That is what JSON Schema's `email` format checkers
/// accept, restricted to ASCII. Whether the address works is only known by mailing it; this
/// keeps out what is no address (spaces, control characters, a NUL byte PostgreSQL refuses).
pub const MAX_EMAIL_CHARS: usize = 254;
const MAX_EMAIL_LOCAL_CHARS: usize = 64;
const MAX_DNS_LABEL_CHARS: usize = 63;
const EMAIL_ATOM_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";
/// The local part's total length (64) is beyond a regex without look-ahead: the checks and
/// the `email` format both enforce it.
const EMAIL_PATTERN: &str = concat!(
    "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*",
    "@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
);
pub const EMAIL_RULE: &str = "must be an email address like name@example.com";

/// Passwords: 8 to 1024 characters, any characters. The upper bound keeps one argon2 input
/// (and so one hashing job) small.
pub const PASSWORD_CHARS: RangeInclusive<usize> = 8..=1024;

/// Whether `username` could be registered. Names that could not are never looked up: a
/// NUL byte would be a 500 from PostgreSQL, and MariaDB's padding collations would let
/// `alice ` find `alice`.
pub fn is_registrable_username(username: &str) -> bool {
    USERNAME_CHARS.contains(&username.len())
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Whether `email` has the form [`EMAIL_RULE`] describes (see [`MAX_EMAIL_CHARS`]).
pub fn is_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let is_atom = |atom: &str| {
        !atom.is_empty()
            && atom
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || EMAIL_ATOM_SPECIALS.contains(c))
    };
    let is_dns_label = |label: &str| {
        (1..=MAX_DNS_LABEL_CHARS).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    email.len() <= MAX_EMAIL_CHARS
        && local.len() <= MAX_EMAIL_LOCAL_CHARS
        && local.split('.').all(is_atom)
        && domain.split('.').count() >= 2
        && domain.split('.').all(is_dns_label)
}

/// Why `password` is refused, if it is. Never quotes the password.
pub fn password_problem(password: &str) -> Option<String> {
    let length = password.chars().count();
    if length < *PASSWORD_CHARS.start() {
        Some(format!(
            "must be at least {} characters",
            PASSWORD_CHARS.start()
        ))
    } else if length > *PASSWORD_CHARS.end() {
        Some(format!(
            "must be at most {} characters",
            PASSWORD_CHARS.end()
        ))
    } else {
        None
    }
}

/// The account the document's examples use: Swagger UI fills the sign-up and login forms
/// with it, so "Try it out" works in that order.
const EXAMPLE_USERNAME: &str = "alice";
const EXAMPLE_EMAIL: &str = "alice@example.com";
const EXAMPLE_PASSWORD: &str = "correct horse battery staple";

/// `POST /users`: a new account.
pub struct CreateUser;

/// `PATCH /users/{id}`: what changes; at least one field.
pub struct UpdateUser;

/// `POST /login`: the credentials to check.
pub struct Login;

impl ToSchema for CreateUser {}
impl PartialSchema for CreateUser {
    fn schema() -> RefOr<Schema> {
        closed_object()
            .property("username", username())
            .property("email", email())
            .property("password", password())
            .required("username")
            .required("email")
            .required("password")
            .examples([json!({
                "username": EXAMPLE_USERNAME,
                "email": EXAMPLE_EMAIL,
                "password": EXAMPLE_PASSWORD,
            })])
            .into()
    }
}

impl ToSchema for UpdateUser {}
impl PartialSchema for UpdateUser {
    fn schema() -> RefOr<Schema> {
        closed_object()
            .property("email", email())
            .property("password", password())
            .min_properties(Some(1))
            .examples([json!({ "email": "alice@example.org" })])
            .into()
    }
}

impl ToSchema for Login {}
impl PartialSchema for Login {
    fn schema() -> RefOr<Schema> {
        // Any strings: a login for a name that cannot exist is a 401 like any wrong one, and
        // its password is still checked (against a dummy hash) so the timing says nothing.
        closed_object()
            .property("username", ObjectBuilder::new().schema_type(Type::String))
            .property(
                "password",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("Never logged, traced or echoed")),
            )
            .required("username")
            .required("password")
            .examples([json!({ "username": EXAMPLE_USERNAME, "password": EXAMPLE_PASSWORD })])
            .into()
    }
}

/// An object without properties beyond the declared ones: the handlers refuse unknown
/// fields (a `PATCH` of `username` must not be silently ignored).
fn closed_object() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
}

fn username() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(*USERNAME_CHARS.start()))
        .max_length(Some(*USERNAME_CHARS.end()))
        .pattern(Some(USERNAME_PATTERN))
        .description(Some(USERNAME_RULE))
        .build()
}

fn email() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
        .max_length(Some(MAX_EMAIL_CHARS))
        .pattern(Some(EMAIL_PATTERN))
        .description(Some(
            "An ASCII address like name@example.com, unique among accounts",
        ))
        .build()
}

fn password() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(*PASSWORD_CHARS.start()))
        .max_length(Some(*PASSWORD_CHARS.end()))
        .description(Some("Any characters; never logged, traced or echoed"))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented patterns and the checks the handlers run agree, string by string.
    fn agree(pattern: &str, check: fn(&str) -> bool, samples: &[&str]) {
        let pattern = regex::Regex::new(pattern).expect("a valid pattern");
        for sample in samples {
            assert_eq!(
                pattern.is_match(sample),
                check(sample),
                "pattern and check disagree on {sample:?}"
            );
        }
    }

    #[test]
    fn usernames() {
        let long = "x".repeat(64);
        let too_long = "x".repeat(65);
        let samples = [
            "abc",
            "a.b-c_d",
            "A1b",
            &long,
            "ab",
            "",
            "has space",
            "x' OR '1'='1",
            "ünï",
            &too_long,
            "alice ",
            "a\0b",
            "abc\n",
        ];
        agree(USERNAME_PATTERN, is_registrable_username, &samples);
        for ok in ["abc", "a.b-c_d", "A1b", &long] {
            assert!(is_registrable_username(ok), "{ok}");
        }
        for bad in ["ab", "has space", "ünï", &too_long, "alice ", "a\0b"] {
            assert!(!is_registrable_username(bad), "{bad}");
        }
    }

    #[test]
    fn emails() {
        let local_64 = format!("{}@x.org", "l".repeat(64));
        let local_65 = format!("{}@x.org", "l".repeat(65));
        let label_63 = format!("a@{}.org", "d".repeat(63));
        let label_64 = format!("a@{}.org", "d".repeat(64));
        let label = "d".repeat(61);
        let long = format!("a@{label}.{label}.{label}.{}.org", "d".repeat(62));
        let too_long = format!("a@{label}.{label}.{label}.{}.org", "d".repeat(63));
        assert_eq!(
            (long.len(), too_long.len()),
            (MAX_EMAIL_CHARS, MAX_EMAIL_CHARS + 1)
        );
        let good = [
            "a@b.co",
            "first.last+tag@example.org",
            "o'neil!#$%&*/=?^_`{|}~-@sub-1.example.io",
            "a@1.2",
            &local_64,
            &label_63,
            &long,
        ];
        #[rustfmt::skip]
        let bad = [
            "", "plain", "@x.org", "a@b", "a@.b", "a@b.", "a b@c.d", "a@b@c.d", "a@b..c",
            "a\0@b.co", "a@b.co\n", "ä@b.co", "a@b_c.co", "(x)@b.co", ".a@b.co", "a.@b.co",
            "a..b@c.d", "a@-b.co", "a@b-.co", "0%5@0.-.t.Q9", &local_65, &label_64, &too_long,
        ];
        // The pattern leaves the local part's length and the total to the checks and the
        // schema's maxLength: compare the two with those bounds applied.
        let within_bounds = |email: &str| {
            email.len() <= MAX_EMAIL_CHARS
                && email
                    .split_once('@')
                    .is_some_and(|(local, _)| local.len() <= MAX_EMAIL_LOCAL_CHARS)
        };
        let pattern = regex::Regex::new(EMAIL_PATTERN).expect("a valid pattern");
        for sample in good.iter().chain(&bad) {
            assert_eq!(
                pattern.is_match(sample) && within_bounds(sample),
                is_email(sample),
                "pattern and check disagree on {sample:?}"
            );
        }
        for ok in good {
            assert!(is_email(ok), "{ok}");
        }
        for no in bad {
            assert!(!is_email(no), "{no:?}");
        }
    }

    #[test]
    fn passwords_are_counted_in_characters_and_never_quoted() {
        assert!(password_problem("12345678").is_none());
        assert!(
            password_problem("ääääääää").is_none(),
            "8 characters, 16 bytes"
        );
        let short = password_problem("hunter2").expect("too short");
        assert!(!short.contains("hunter2"), "{short}");
        assert!(password_problem(&"p".repeat(1025)).is_some());
    }
}
