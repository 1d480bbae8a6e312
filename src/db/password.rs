//! Password hashing with argon2id: CPU work done right.
//!
//! One argon2id hash (the OWASP baseline the crate defaults to: 19 MiB, 2 passes) costs tens
//! of milliseconds of CPU and memory, exactly the kind of work lesson 2 says must not run on a
//! runtime worker. So every hash and every verification runs on the blocking pool through
//! [`run_blocking`], and a semaphore with one permit per core bounds how many run at once:
//! 200 concurrent sign-ups then queue for a permit (an `await`, holding no thread) instead of
//! starting 200 threads that fight over two cores and allocate 19 MiB each. The queue itself
//! is bounded ([`QUEUED_PER_PERMIT`] per permit): past it a request is told 503 with `Retry-After` at
//! once, so a flood of logins cannot make everyone else's wait grow without end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tokio::sync::Semaphore;

use crate::blocking::run_blocking;
use crate::config::available_cpus;
use crate::error::AppError;

/// Hashes and verifies passwords; cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Requests waiting for a permit now, and how many may.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
}

/// Waiting requests allowed per permit: about this many hashes' time (tens of ms each) is the
/// longest a request queues before it is answered. Room for the 50 concurrent sign-ups of
/// docs/lessons.md's race on one core.
pub const QUEUED_PER_PERMIT: usize = 64;

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

/// A real argon2id hash of a password nobody has, with the same parameters as stored hashes.
/// `POST /login` for an unknown user verifies against it, so that answer costs the same
/// argon2 work as a wrong password for a real user: the response time does not reveal which
/// usernames exist.
static DUMMY_HASH: LazyLock<Option<String>> =
    LazyLock::new(|| hash_now("stallscope: no user has this password").ok());

impl Passwords {
    /// Also computes the dummy hash now, so the first login is not the slow one.
    pub fn new() -> Self {
        LazyLock::force(&DUMMY_HASH);
        Self::with_limits(available_cpus(), available_cpus() * QUEUED_PER_PERMIT)
    }

    /// `permits` hashes at once, and at most `max_waiting` requests waiting for one.
    pub fn with_limits(permits: usize, max_waiting: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            waiting: Arc::default(),
            max_waiting,
        }
    }

    /// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) of `password`.
    pub async fn hash(&self, password: String) -> Result<String, AppError> {
        let _permit = self.permit().await?;
        run_blocking("users/argon2-hash", move || hash_now(&password)).await?
    }

    /// Whether `password` matches `stored`; with no stored hash (no such user) the same work
    /// is done against the dummy hash and the answer is always no.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, AppError> {
        let _permit = self.permit().await?;
        run_blocking("users/argon2-verify", move || {
            let (hash, real) = match &stored {
                Some(hash) => (hash.as_str(), true),
                None => (
                    DUMMY_HASH.as_deref().ok_or_else(|| {
                        AppError::Internal("the dummy password hash could not be computed".into())
                    })?,
                    false,
                ),
            };
            let parsed = PasswordHash::new(hash).map_err(|err| {
                AppError::Internal(format!("a stored password hash is malformed: {err}"))
            })?;
            let matches = Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok();
            Ok(matches && real)
        })
        .await?
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, AppError> {
        if let Ok(permit) = self.permits.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(AppError::Unavailable(
                "too many password checks are queued; try again after Retry-After seconds".into(),
            ));
        }
        // Counted out when the wait ends, however it ends (a client that goes away drops it).
        let _waiting = Waiting(&self.waiting);
        self.permits
            .acquire()
            .await
            .map_err(|_| AppError::Unavailable("password hashing is shutting down".into()))
    }
}

/// One request in [`Passwords`]' queue, until dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn hash_now(password: &str) -> Result<String, AppError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| AppError::Internal(format!("password hashing failed: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One permit, two may wait: the third concurrent waiter is a 503 at once; a waiter whose
    /// client goes away leaves the queue; the queue frees as the others finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_for_a_permit_is_bounded() {
        let passwords = Passwords::with_limits(1, 2);
        let held = passwords.permits.try_acquire().expect("the only permit");
        let check = |passwords: &Passwords| {
            let passwords = passwords.clone();
            tokio::spawn(async move { passwords.verify("x".into(), None).await })
        };
        let queued_to = |n: usize| {
            let passwords = passwords.clone();
            async move {
                while passwords.waiting.load(Ordering::Acquire) != n {
                    tokio::task::yield_now().await;
                }
            }
        };
        let first = check(&passwords);
        let impatient = check(&passwords);
        queued_to(2).await;
        let refused = passwords.verify("x".into(), None).await;
        assert!(
            matches!(refused, Err(AppError::Unavailable(ref why)) if why.contains("queued")),
            "{refused:?}"
        );
        impatient.abort();
        let _ = impatient.await;
        queued_to(1).await;
        let second = check(&passwords);
        queued_to(2).await;
        drop(held);
        for waiter in [first, second] {
            assert!(
                !waiter.await.expect("task").expect("verified"),
                "no such user"
            );
        }
        assert_eq!(passwords.waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_verify_and_unknown_users_never_match() {
        let passwords = Passwords::new();
        let hash = passwords.hash("correct horse".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        let check = |pw: &str, stored: Option<String>| passwords.verify(pw.into(), stored);
        assert!(
            check("correct horse", Some(hash.clone()))
                .await
                .expect("verify")
        );
        assert!(!check("wrong horse", Some(hash)).await.expect("verify"));
        assert!(
            !check("stallscope: no user has this password", None)
                .await
                .expect("verify")
        );
    }
}
