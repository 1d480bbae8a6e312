//! Rate limits on `POST /login`, per username and per client address (governor's keyed GCRA
//! limiters). Each attempt costs an argon2 verification, tens of milliseconds of a core that
//! real users share: without a limit, 200 concurrent wrong-password attempts queue every real
//! login behind them. Past a limit the answer is 429 with `Retry-After`, before any hashing.
//!
//! Addresses are the TCP peer's: behind a proxy every client is the proxy, so the per-client
//! limit should be raised there (`LoginLimits::new`'s quotas), or keyed on a trusted header.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::AppError;

/// `--login-limit-per-username`'s default: attempts per minute.
pub const PER_USERNAME_PER_MINUTE: u32 = 10;
/// `--login-limit-per-client`'s default: attempts per minute.
pub const PER_CLIENT_PER_MINUTE: u32 = 30;

/// The attempts a username or a client gets back to back, for `per_minute` a minute: ten
/// seconds' worth, and at least three (a few mistyped passwords), so a burst never queues
/// hashes long enough to delay everyone else.
fn burst(per_minute: u32) -> u32 {
    (per_minute / 6).max(3).min(per_minute.max(1))
}
/// Forgets the keys whose limits have refilled every this many attempts, so that invented
/// usernames cannot grow the tables without end.
const FORGET_EVERY: u32 = 1024;

pub struct LoginLimits {
    per_username: DefaultKeyedRateLimiter<String>,
    per_client: DefaultKeyedRateLimiter<IpAddr>,
    attempts: AtomicU32,
}

impl LoginLimits {
    /// Limits of `per_username` and `per_client` attempts a minute.
    pub fn new(per_username: u32, per_client: u32) -> Self {
        let at_least_one = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let per_minute =
            |n: u32| Quota::per_minute(at_least_one(n)).allow_burst(at_least_one(burst(n)));
        Self {
            per_username: RateLimiter::keyed(per_minute(per_username)),
            per_client: RateLimiter::keyed(per_minute(per_client)),
            attempts: AtomicU32::new(0),
        }
    }

    /// Counts one attempt for `username` from `client`; a 429 naming how long to wait when
    /// either is over its limit.
    pub fn attempt(&self, username: &str, client: Option<IpAddr>) -> Result<(), AppError> {
        if self.attempts.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.per_username.retain_recent();
            self.per_client.retain_recent();
        }
        let now = DefaultClock::default().now();
        if let Some(client) = client
            && let Err(not_until) = self.per_client.check_key(&client)
        {
            return Err(too_many("from this address", not_until.wait_time_from(now)));
        }
        // Usernames are compared as stored; the key is capped so a long one costs nothing.
        let key: String = username.chars().take(64).collect();
        if let Err(not_until) = self.per_username.check_key(&key) {
            return Err(too_many("for this username", not_until.wait_time_from(now)));
        }
        Ok(())
    }
}

fn too_many(whose: &'static str, wait: Duration) -> AppError {
    AppError::TooManyRequests {
        what: whose,
        retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_and_a_client_each_have_their_own_budget() {
        assert_eq!((burst(10), burst(30), burst(1), burst(600)), (3, 5, 1, 100));
        // Bursts of three for a username, five for a client.
        let limits = LoginLimits::new(10, 30);
        let (alice, mallory) = ("alice", Some(IpAddr::from([127, 0, 0, 2])));
        for _ in 0..3 {
            assert!(limits.attempt(alice, mallory).is_ok());
        }
        let refused = limits.attempt(alice, mallory);
        assert!(
            matches!(refused, Err(AppError::TooManyRequests { what: "for this username", retry_after_secs }) if (1..=60).contains(&retry_after_secs)),
            "{refused:?}"
        );
        // That attempt still counted for the client: its fifth is the last.
        assert!(limits.attempt("bob", mallory).is_ok());
        let refused = limits.attempt("bob", mallory);
        assert!(
            matches!(
                refused,
                Err(AppError::TooManyRequests {
                    what: "from this address",
                    ..
                })
            ),
            "{refused:?}"
        );
        // Another client logs in as bob; alice stays limited for everyone.
        let elsewhere = Some(IpAddr::from([127, 0, 0, 1]));
        assert!(limits.attempt("bob", elsewhere).is_ok());
        assert!(limits.attempt(alice, elsewhere).is_err());
    }
}
