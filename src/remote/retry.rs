//! Bounded exponential backoff for transient object-store failures.

use std::future::Future;
use std::time::Duration;

/// How [`RemoteStorage`](super::RemoteStorage) retries transient failures.
///
/// The wait before retry `n` (counting from 1) is `initial_backoff × 2^(n-1)`, capped at
/// `max_backoff`. Retrying stops after `max_attempts` attempts in all, or when the next wait would
/// end more than `max_elapsed` after the first attempt began, whichever comes first. Permanent
/// errors (not found, precondition failed, …) are never retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; at least 1 is always made.
    pub max_attempts: u32,
    /// The wait before the first retry.
    pub initial_backoff: Duration,
    /// The longest single wait.
    pub max_backoff: Duration,
    /// The longest time from the first attempt to the start of the last one.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// 10 attempts, 50 ms doubling to at most 5 s, within 60 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn no_retry() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry` (1 for the first retry).
    pub(super) fn backoff(&self, retry: u32) -> Duration {
        let shift = retry.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << shift)
            .min(self.max_backoff)
    }

    /// Runs `op` until it succeeds, fails permanently, or the policy is used up; returns the last
    /// result.
    pub(super) async fn run<T, F, Fut>(&self, mut op: F) -> object_store::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        let start = tokio::time::Instant::now();
        let mut attempt = 1u32;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if !is_transient(&e) => return Err(e),
                Err(e) => {
                    let wait = self.backoff(attempt);
                    if attempt >= self.max_attempts
                        || start.elapsed().saturating_add(wait) > self.max_elapsed
                    {
                        return Err(e);
                    }
                    ::metrics::counter!(crate::metrics::REMOTE_RETRIES).increment(1);
                    tracing::debug!(attempt, error = %e, "retrying an object-storage request");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// Whether an object-store error may go away when the request is repeated.
pub(super) fn is_transient(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
    )
}
