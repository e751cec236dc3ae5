//! Per-hop timestamps of a call through the gateway, for finding where its
//! time goes: a debug event at each hop (target `mystic::hops`, so
//! `RUST_LOG=mystic::hops=debug` shows them and nothing else), with the
//! microseconds since the call's headers arrived (hops in the service) or
//! since it was queued (hops in the worker's actor and its transport).
//! Off by default; a disabled event costs one check of a static.
//!
//! The hops, in order: `received` (the handler has the decoded request),
//! `queued`, `picked` (a worker's actor took the job), `written` (the
//! request is in the worker's pipe or rings), `read` (the worker's answer
//! is read), `replied` (handed to the waiting handler), `returned` (the
//! handler returns the response to tonic).

use tokio::time::Instant;

/// The events' target.
pub const TARGET: &str = "mystic::hops";

/// Records `hop`, `since` the instant it is measured from.
#[inline]
pub fn hop(hop: &'static str, since: Option<Instant>) {
    if tracing::enabled!(target: TARGET, tracing::Level::DEBUG)
        && let Some(since) = since
    {
        tracing::debug!(target: TARGET, hop, us = since.elapsed().as_micros() as u64);
    }
}

tokio::task_local! {
    /// When the call the current worker actor converses about was queued.
    static QUEUED_AT: Instant;
}

/// Runs `conversation` as the one of the call queued at `queued_at`: the
/// transport's hops inside it are measured from there.
pub async fn within_call<F: Future>(queued_at: Instant, conversation: F) -> F::Output {
    QUEUED_AT.scope(queued_at, conversation).await
}

/// Records `hop` of the call being conversed about (see [`within_call`]).
#[inline]
pub fn hop_in_call(hop: &'static str) {
    if tracing::enabled!(target: TARGET, tracing::Level::DEBUG) {
        self::hop(hop, QUEUED_AT.try_with(|at| *at).ok());
    }
}
