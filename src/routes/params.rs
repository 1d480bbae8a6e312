//! Query-string parameters with errors that say what was wrong and what is allowed.
//!
//! axum's `Query<T>` rejects bad input with a plain-text 400 that does not name the
//! parameter; the lessons want a problem document that does.

use std::collections::HashMap;

use crate::config::Bounds;
use crate::error::AppError;

/// The decoded query string of one request.
#[derive(Debug, Default)]
pub struct QueryParams(HashMap<String, String>);

impl QueryParams {
    /// Decodes `a=1&b=2`. A repeated key keeps its first value.
    pub fn parse(query: Option<&str>) -> Self {
        let mut params = HashMap::new();
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            params
                .entry(key.into_owned())
                .or_insert_with(|| value.into_owned());
        }
        Self(params)
    }

    /// A required whole number in `min..=max`.
    pub fn bounded_u64(&self, name: &'static str, min: u64, max: u64) -> Result<u64, AppError> {
        let invalid = |problem: &str| AppError::InvalidParameter {
            name,
            detail: format!("{problem}; `{name}` must be a whole number from {min} to {max}"),
        };
        let raw = self
            .0
            .get(name)
            .ok_or_else(|| invalid("it is missing"))?
            .trim();
        if raw.starts_with('-') {
            return Err(invalid(&format!("`{raw}` is negative")));
        }
        let value: u64 = raw
            .parse()
            .map_err(|_| invalid(&format!("`{raw}` is not a whole number")))?;
        if !(min..=max).contains(&value) {
            return Err(invalid(&format!("{value} is out of range")));
        }
        Ok(value)
    }

    /// Like [`Self::bounded_u64`], but `default` when the parameter is absent.
    pub fn optional_u64(
        &self,
        name: &'static str,
        min: u64,
        max: u64,
        default: u64,
    ) -> Result<u64, AppError> {
        if self.0.contains_key(name) {
            self.bounded_u64(name, min, max)
        } else {
            Ok(default)
        }
    }

    /// A lesson parameter within `bounds`, its default when absent.
    pub fn within(&self, name: &'static str, bounds: Bounds) -> Result<u64, AppError> {
        self.optional_u64(name, bounds.min, bounds.max, bounds.default)
    }

    /// A text parameter as given, if present.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<u64, AppError> {
        QueryParams::parse(Some(query)).bounded_u64("ms", 0, 100)
    }

    #[test]
    fn accepts_values_in_range() {
        assert_eq!(parse("ms=0").ok(), Some(0));
        assert_eq!(parse("ms=100").ok(), Some(100));
        assert_eq!(parse("other=1&ms=42").ok(), Some(42));
    }

    #[test]
    fn optional_values_default_only_when_absent() {
        let params = QueryParams::parse(Some("limit=5&username=a%27b"));
        assert_eq!(params.optional_u64("limit", 1, 10, 3).ok(), Some(5));
        assert_eq!(params.optional_u64("cursor", 0, 10, 0).ok(), Some(0));
        assert!(params.optional_u64("limit", 6, 10, 7).is_err());
        assert_eq!(params.text("username"), Some("a'b"));
        assert_eq!(params.text("email"), None);
    }

    #[test]
    fn rejects_with_a_reason() {
        for (query, reason) in [
            ("", "missing"),
            ("ms=abc", "not a whole number"),
            ("ms=-5", "negative"),
            ("ms=101", "out of range"),
            ("ms=1.5", "not a whole number"),
            ("ms=99999999999999999999999", "not a whole number"),
        ] {
            match parse(query) {
                Err(AppError::InvalidParameter { name, detail }) => {
                    assert_eq!(name, "ms");
                    assert!(detail.contains(reason), "{query}: {detail}");
                    assert!(detail.contains("from 0 to 100"), "{query}: {detail}");
                }
                other => panic!("{query}: expected InvalidParameter, got {other:?}"),
            }
        }
    }
}
