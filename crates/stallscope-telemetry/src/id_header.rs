//! Header values for the ids stallscope writes on every response (`x-request-id`, `traceparent`),
//! without an allocation and a validation pass each.
//!
//! Each thread writes its ids into a buffer of its own and hands out slices of it (a reference
//! count, no allocation). The ids are text this crate formats (ASCII prefixes, hex, dashes), so
//! a word-at-a-time ASCII check is all the unchecked constructor needs to be sound. Why not
//! `HeaderValue::try_from`: it measured 0.809 × bare instead of 0.86 (docs/benchmarks.md).

use std::cell::RefCell;

use axum::http::HeaderValue;
use bytes::{Bytes, BytesMut};

/// Size of each thread's buffer: about sixty responses' ids.
const BUFFER: usize = 4096;

thread_local! {
    static BUFFER_LEFT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `ascii` as a header value; `None` if it is not ASCII. Only for ids this crate formats,
/// which are printable ASCII (asserted in debug builds): ASCII control characters pass the
/// check, which is why this is not for text from anywhere else.
pub(crate) fn id_value(ascii: &[u8]) -> Option<HeaderValue> {
    if !ascii.is_ascii() {
        return None;
    }
    debug_assert!(
        ascii.iter().all(u8::is_ascii_graphic),
        "ids are printable ASCII: {ascii:?}"
    );
    let bytes = shared_copy(ascii);
    // SAFETY: `from_maybe_shared_unchecked` requires valid UTF-8, and ASCII is (checked above).
    Some(unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) })
}

/// A copy of `text` carved from this thread's buffer (a fresh allocation only while the thread
/// is shutting down, or when the buffer cannot borrow itself).
fn shared_copy(text: &[u8]) -> Bytes {
    BUFFER_LEFT
        .try_with(|left| {
            let mut left = left.try_borrow_mut().ok()?;
            if left.capacity() < text.len() {
                *left = BytesMut::with_capacity(BUFFER.max(text.len()));
            }
            left.extend_from_slice(text);
            Some(left.split().freeze())
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| Bytes::copy_from_slice(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_the_text_and_stay_apart() {
        let values: Vec<HeaderValue> = (0..2 * BUFFER / 20)
            .map(|n| id_value(format!("req-{n:016x}").as_bytes()).expect("ASCII"))
            .collect();
        for (n, value) in values.iter().enumerate() {
            assert_eq!(value, format!("req-{n:016x}").as_str());
        }
    }

    #[test]
    fn values_outlive_their_buffer_and_thread() {
        let value = std::thread::spawn(|| id_value(b"00-abc-01").expect("ASCII"))
            .join()
            .expect("thread");
        assert_eq!(value, "00-abc-01");
    }

    #[test]
    fn text_longer_than_a_buffer_still_fits() {
        let long = "a".repeat(BUFFER + 1);
        let value = id_value(long.as_bytes()).expect("ASCII");
        assert_eq!(value.as_bytes(), long.as_bytes());
    }

    #[test]
    fn non_ascii_is_refused() {
        assert!(id_value("req-ü".as_bytes()).is_none());
    }
}
