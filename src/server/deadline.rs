//! A call's deadline: the client's `grpc-timeout` header and the gateway's
//! `--call-timeout`, whichever ends first (for a call of a stream, also the
//! stream's `mystic-call-timeout`, see `stream.rs`).
//!
//! tonic enforces the client's `grpc-timeout` too, from when the request's
//! headers arrived, and answers `CANCELLED` when it passes. So the client's
//! budget counts from the request's [`Arrival`] (stamped as the headers come
//! in) and ends [`AHEAD_OF_TONIC`] early: the pool answers first, with
//! `DEADLINE_EXCEEDED` and `call-timeout`, and replaces the worker.

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

use crate::pool::Deadline;

/// How much sooner than tonic the pool gives up on a client's deadline.
pub const AHEAD_OF_TONIC: Duration = Duration::from_millis(20);

/// When a request's headers arrived (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub Instant);

/// The deadline of a call that arrived at `arrival`, if it has one.
pub fn call_deadline(
    metadata: &MetadataMap,
    arrival: Option<Arrival>,
    call_timeout: Option<Duration>,
) -> Option<Deadline> {
    earliest(
        client_deadline(metadata, arrival),
        call_timeout.map(Deadline::after),
    )
}

/// The client's own deadline (`grpc-timeout`) of a request that arrived at
/// `arrival`, ending [`AHEAD_OF_TONIC`] early.
pub fn client_deadline(metadata: &MetadataMap, arrival: Option<Arrival>) -> Option<Deadline> {
    let arrived = arrival.map_or_else(Instant::now, |Arrival(at)| at);
    timeout_header(metadata, "grpc-timeout").map(|budget| Deadline {
        at: arrived + budget - AHEAD_OF_TONIC.min(budget / 2),
        budget,
    })
}

/// A duration in `grpc-timeout`'s format under `key`, if there is a valid one.
pub fn timeout_header(metadata: &MetadataMap, key: &str) -> Option<Duration> {
    metadata
        .get(key)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// The deadline that ends first.
pub fn earliest(one: Option<Deadline>, other: Option<Deadline>) -> Option<Deadline> {
    match (one, other) {
        (Some(one), Some(other)) => Some(if one.at <= other.at { one } else { other }),
        (one, other) => one.or(other),
    }
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("999m"), Some(Duration::from_millis(999)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("8n"), Some(Duration::from_nanos(8)));
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in ["", "S", "5", "5s", "123456789S", "-1S", "1.5S", "5ΩS"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_shorter_budget_wins_and_the_clients_ends_ahead_of_tonic() {
        let left = |deadline: Option<Deadline>| deadline.unwrap().at - Instant::now();
        let mut metadata = MetadataMap::new();
        assert!(call_deadline(&metadata, None, None).is_none());
        let server = Some(Duration::from_secs(10));
        assert_eq!(
            call_deadline(&metadata, None, server).unwrap().budget,
            Duration::from_secs(10)
        );
        metadata.insert("grpc-timeout", "1500m".parse().unwrap());
        let client = call_deadline(&metadata, None, server).unwrap();
        assert_eq!(client.budget, Duration::from_millis(1500));
        assert_eq!(
            left(Some(client)),
            Duration::from_millis(1500) - AHEAD_OF_TONIC
        );
        let shorter = call_deadline(&metadata, None, Some(Duration::from_secs(1)));
        assert_eq!(shorter.unwrap().budget, Duration::from_secs(1));
        // Counted from the arrival of the headers.
        let arrival = Arrival(Instant::now());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            left(call_deadline(&metadata, Some(arrival), server)),
            Duration::from_millis(1000) - AHEAD_OF_TONIC
        );
        // A tiny budget keeps half of itself.
        metadata.insert("grpc-timeout", "10m".parse().unwrap());
        assert_eq!(
            left(call_deadline(&metadata, None, None)),
            Duration::from_millis(5)
        );
    }
}
