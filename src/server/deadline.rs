//! A call's deadline: the client's `grpc-timeout` header and the gateway's
//! `--call-timeout`, whichever ends first.

use std::time::Duration;

use tonic::metadata::MetadataMap;

use crate::pool::Deadline;

/// The deadline for a call arriving now, if it has one.
pub fn call_deadline(metadata: &MetadataMap, call_timeout: Option<Duration>) -> Option<Deadline> {
    let client = metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout);
    let budget = match (client, call_timeout) {
        (Some(client), Some(server)) => client.min(server),
        (one, other) => one.or(other)?,
    };
    Some(Deadline::after(budget))
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

    #[tokio::test]
    async fn the_shorter_budget_wins() {
        let mut metadata = MetadataMap::new();
        assert!(call_deadline(&metadata, None).is_none());
        let server = Some(Duration::from_secs(10));
        assert_eq!(
            call_deadline(&metadata, server).unwrap().budget,
            Duration::from_secs(10)
        );
        metadata.insert("grpc-timeout", "1500m".parse().unwrap());
        assert_eq!(
            call_deadline(&metadata, server).unwrap().budget,
            Duration::from_millis(1500)
        );
        assert_eq!(
            call_deadline(&metadata, Some(Duration::from_secs(1)))
                .unwrap()
                .budget,
            Duration::from_secs(1)
        );
    }
}
