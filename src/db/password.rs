//! Password hashing with argon2id: CPU work done right.
//!
//! One argon2id hash (the OWASP baseline the crate defaults to: 19 MiB, 2 passes) costs tens
//! of milliseconds of CPU and memory, exactly the kind of work lesson 2 says must not run on a
//! runtime worker. So every hash and every verification runs on the blocking pool through
//! [`run_blocking`], and a semaphore with one permit per core bounds how many run at once:
//! 200 concurrent sign-ups then queue for a permit (an `await`, holding no thread) instead of
//! starting 200 threads that fight over two cores and allocate 19 MiB each. The queue itself
//! is bounded ([`QUEUED_PER_PERMIT`] per permit, each waiting at most [`PERMIT_WAIT`]): past
//! it a request is told 503 with `Retry-After`, so a flood of logins cannot make everyone
//! else's wait grow without end.
//!
//! Memory: argon2's 19 MiB of working blocks are allocated once per permit and reused
//! ([`Workspaces`]). Allocating them per hash (what `Argon2::hash_password` does) left glibc
//! with one arena per blocking thread, each keeping freed 19 MiB chunks: a login flood took
//! RSS from 40 MB to 550–685 MB and 432 MB stayed after it (`bench/login-flood.sh` has the
//! figures since, docs/benchmarks.md).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::blocking::run_blocking;
use crate::config::available_cpus;
use crate::error::AppError;

/// Hashes and verifies passwords; cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// argon2's working memory, one per permit in use.
    workspaces: Workspaces,
    /// Requests waiting for a permit now, and how many may.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
}

/// Waiting requests allowed per permit: about this many hashes' time (tens of ms each) is the
/// longest a request queues before it is answered. Room for the 50 concurrent sign-ups of
/// docs/lessons.md's race on one core.
pub const QUEUED_PER_PERMIT: usize = 64;

/// The longest a request waits for a permit before it is told 503: a queue that moves slower
/// than this is a flood, and the client is better off retrying.
pub const PERMIT_WAIT: Duration = Duration::from_secs(2);

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
            workspaces: Workspaces::default(),
            waiting: Arc::default(),
            max_waiting,
        }
    }

    /// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) of `password`.
    pub async fn hash(&self, password: String) -> Result<String, AppError> {
        let permit = self.permit().await?;
        let workspaces = self.workspaces.clone();
        run_blocking("users/argon2-hash", move || {
            workspaces.with(permit, |memory| hash_with(&password, memory))
        })
        .await?
    }

    /// Whether `password` matches `stored`; with no stored hash (no such user) the same work
    /// is done against the dummy hash and the answer is always no.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, AppError> {
        let permit = self.permit().await?;
        let workspaces = self.workspaces.clone();
        run_blocking("users/argon2-verify", move || {
            workspaces.with(permit, |memory| match &stored {
                Some(hash) => verify_with(&password, hash, memory),
                None => match DUMMY_HASH.as_deref() {
                    Some(dummy) => verify_with(&password, dummy, memory).map(|_| false),
                    None => Err(AppError::Internal(
                        "the dummy password hash could not be computed".into(),
                    )),
                },
            })
        })
        .await?
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, AppError> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
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
        match tokio::time::timeout(PERMIT_WAIT, Arc::clone(&self.permits).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(AppError::Unavailable(
                "password hashing is shutting down".into(),
            )),
            Err(_) => Err(AppError::Unavailable(format!(
                "no password check could start within {} s; try again after Retry-After seconds",
                PERMIT_WAIT.as_secs()
            ))),
        }
    }
}

/// One request in [`Passwords`]' queue, until dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// argon2's working blocks, kept for reuse: one per permit at most, because a workspace is
/// taken and given back by the blocking job that holds the permit, which runs to its end even
/// when the request that started it is gone.
#[derive(Clone, Default)]
struct Workspaces(Arc<WorkspacePool>);

#[derive(Default)]
struct WorkspacePool {
    free: Mutex<Vec<Vec<Block>>>,
    /// Workspaces ever allocated: the number of permits, at most.
    allocated: AtomicUsize,
}

impl Workspaces {
    /// Runs `work` in a free workspace (a new one for the default parameters, 19 MiB, when
    /// none is free), then gives it back and lets `permit` go.
    fn with<T>(&self, permit: OwnedSemaphorePermit, work: impl FnOnce(&mut Vec<Block>) -> T) -> T {
        let mut memory = self
            .0
            .free
            .lock()
            .ok()
            .and_then(|mut free| free.pop())
            .unwrap_or_else(|| {
                self.0.allocated.fetch_add(1, Ordering::Relaxed);
                vec![Block::default(); Params::default().block_count()]
            });
        let done = work(&mut memory);
        if let Ok(mut free) = self.0.free.lock() {
            free.push(memory);
        }
        drop(permit);
        done
    }
}

/// The PHC string of `password` with a new salt, hashed in `memory`.
fn hash_with(password: &str, memory: &mut Vec<Block>) -> Result<String, AppError> {
    let failed =
        |err: &dyn std::fmt::Display| AppError::Internal(format!("password hashing failed: {err}"));
    let salt = SaltString::generate(&mut OsRng);
    let argon2 = Argon2::default();
    let hash = output_of(
        &argon2,
        password,
        salt.as_salt(),
        Params::DEFAULT_OUTPUT_LEN,
        memory,
    )
    .map_err(|err| failed(&err))?;
    let params = ParamsString::try_from(argon2.params()).map_err(|err| failed(&err))?;
    Ok(PasswordHash {
        algorithm: Algorithm::default().ident(),
        version: Some(Version::default().into()),
        params,
        salt: Some(salt.as_salt()),
        hash: Some(hash),
    }
    .to_string())
}

/// Whether `password` hashes to `stored` (a PHC string), with its own parameters, in `memory`
/// (grown if `stored` asks for more than the default).
fn verify_with(password: &str, stored: &str, memory: &mut Vec<Block>) -> Result<bool, AppError> {
    let malformed = |err: &dyn std::fmt::Display| {
        AppError::Internal(format!("a stored password hash is malformed: {err}"))
    };
    let parsed = PasswordHash::new(stored).map_err(|err| malformed(&err))?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(malformed(&"it has no salt or no hash"));
    };
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|err| malformed(&err))?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|err| malformed(&err))?
        .unwrap_or_default();
    let params = Params::try_from(&parsed).map_err(|err| malformed(&err))?;
    let argon2 = Argon2::new(algorithm, version, params);
    let actual = output_of(&argon2, password, salt, expected.len(), memory)
        .map_err(|err| malformed(&err))?;
    // `Output`'s equality is constant-time.
    Ok(actual == expected)
}

/// argon2's output for `password` and `salt`, `len` bytes, computed in `memory`.
fn output_of(
    argon2: &Argon2<'_>,
    password: &str,
    salt: Salt<'_>,
    len: usize,
    memory: &mut Vec<Block>,
) -> Result<Output, argon2::password_hash::Error> {
    let needed = argon2.params().block_count();
    if memory.len() < needed {
        memory.resize(needed, Block::default());
    }
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes)?;
    Output::init_with(len, |out| {
        argon2
            .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..])
            .map_err(argon2::password_hash::Error::from)
    })
}

fn hash_now(password: &str) -> Result<String, AppError> {
    hash_with(password, &mut Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes made in a reused workspace are the argon2 crate's own PHC strings, both ways:
    /// stored hashes from before keep verifying.
    #[test]
    fn reused_memory_hashes_as_the_argon2_crate_does() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let mut memory = Vec::new();
        let ours = hash_with("correct horse", &mut memory).expect("hash");
        let parsed = PasswordHash::new(&ours).expect("a PHC string");
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        let theirs = Argon2::default()
            .hash_password(b"correct horse", &SaltString::generate(&mut OsRng))
            .expect("hash")
            .to_string();
        assert!(verify_with("correct horse", &theirs, &mut memory).expect("verify"));
        assert!(!verify_with("wrong horse", &theirs, &mut memory).expect("verify"));
        assert!(!verify_with("wrong horse", &ours, &mut memory).expect("verify"));
        // One workspace, reused: never grown past the default parameters.
        assert_eq!(memory.len(), Params::default().block_count());
    }

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

    /// A check whose request goes away mid-hash keeps its permit and its workspace until the
    /// hash is done: memory stays at one workspace per permit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_check_allocates_no_second_workspace() {
        let passwords = Passwords::with_limits(1, 4);
        let started = {
            let passwords = passwords.clone();
            tokio::spawn(async move { passwords.verify("x".into(), None).await })
        };
        while passwords.permits.available_permits() == 1 {
            tokio::task::yield_now().await;
        }
        started.abort();
        let _ = started.await;
        assert!(!passwords.verify("y".into(), None).await.expect("verified"));
        let allocated = passwords.workspaces.0.allocated.load(Ordering::Relaxed);
        assert_eq!(allocated, 1, "one permit, one workspace");
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
