//! Waiting on time that may not be set.

use tokio::time::Instant;

/// Sleeps until `at`; never returns when there is none.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
