//! Password hashing with argon2id: CPU work done right.
//!
//! One argon2id hash (the OWASP baseline the crate defaults to: 19 MiB, 2 passes) costs tens
//! of milliseconds of CPU and memory, exactly the kind of work lesson 2 says must not run on a
//! runtime worker. So every hash and every verification runs on the blocking pool through
//! [`run_blocking`], and a semaphore with one permit per core bounds how many run at once:
//! 200 concurrent sign-ups then queue for a permit (an `await`, holding no thread) instead of
//! starting 200 threads that fight over two cores and allocate 19 MiB each.

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
}

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
        Self {
            permits: Arc::new(Semaphore::new(available_cpus())),
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
        self.permits
            .acquire()
            .await
            .map_err(|_| AppError::Unavailable("password hashing is shutting down".into()))
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
