//! Prometheus metrics (`prometheus-client`): what the pool does, per worker
//! and per outcome, and the `/metrics` endpoint (axum) that serves them when
//! `--metrics-listen` is set.
//!
//! Counters and histograms are updated where things happen (the worker
//! actors, the service); the two gauges that describe the pool right now
//! (queue depth, busy workers) are read from the pool when scraped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;

use crate::error::{Direction, ErrorKind, GatewayError};

/// The media type of what `/metrics` returns.
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a call that reached a worker ended: a response came back (the
/// function may still have raised: that is its own business, carried in the
/// payload), or its caller got an error of this kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed(ErrorKind),
}

impl Outcome {
    /// The outcome of a call answered with `result`.
    pub fn of<T>(result: &Result<T, GatewayError>) -> Self {
        match result {
            Ok(_) => Outcome::Ok,
            Err(err) => Outcome::Failed(err.kind()),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed(kind) => kind.as_str(),
        }
    }
}

/// Why a call never reached a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unserved {
    /// Refused on arrival, with this kind of error.
    Refused(ErrorKind),
    /// Its deadline passed while it waited in the queue.
    ExpiredInQueue,
    /// Its caller went away while it waited in the queue.
    CallerLeft,
}

impl Unserved {
    fn as_str(self) -> &'static str {
        match self {
            Unserved::Refused(kind) => kind.as_str(),
            Unserved::ExpiredInQueue => "deadline-in-queue",
            Unserved::CallerLeft => "caller-left",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    worker: u64,
    outcome: &'static str,
}

/// Why a worker slot got a new process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// The process died, or broke the protocol.
    Crashed,
    /// Its call ran past the deadline, and it was killed.
    TimedOut,
    /// It reached `--max-calls-per-worker` or `--max-worker-rss-bytes`.
    Recycled,
    /// The process did not get through its start-up.
    FailedStart,
}

impl Restart {
    const ALL: [Restart; 4] = [
        Restart::Crashed,
        Restart::TimedOut,
        Restart::Recycled,
        Restart::FailedStart,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Restart::Crashed => "crashed",
            Restart::TimedOut => "timed-out",
            Restart::Recycled => "recycled",
            Restart::FailedStart => "failed-start",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RestartLabels {
    worker: u64,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    transport: &'static str,
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectedLabels {
    reason: &'static str,
}

/// Every metric the gateway exports, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    transport: &'static str,
    calls: Family<CallLabels, Counter>,
    call_duration: Histogram,
    queue_wait: Histogram,
    restarts: Family<RestartLabels, Counter>,
    bytes: Family<BytesLabels, Counter>,
    rejected: Family<RejectedLabels, Counter>,
    queue_depth: Gauge,
    busy_workers: Gauge,
}

impl Metrics {
    /// Metrics for a pool of `workers` on `transport`.
    pub fn new(workers: usize, transport: &'static str) -> Self {
        let mut registry = Registry::with_prefix("mystic");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "Calls that reached a worker, by worker and outcome",
            calls.clone(),
        );
        // 100 µs .. about 105 s.
        let call_duration = Histogram::new(exponential_buckets(1e-4, 2.0, 21));
        registry.register_with_unit(
            "call_duration",
            "Time from a worker taking a call to its outcome",
            Unit::Seconds,
            call_duration.clone(),
        );
        let queue_wait = Histogram::new(exponential_buckets(1e-5, 2.0, 24));
        registry.register_with_unit(
            "queue_wait",
            "Time a call waited in the queue for a free worker",
            Unit::Seconds,
            queue_wait.clone(),
        );
        let restarts = Family::<RestartLabels, Counter>::default();
        registry.register(
            "worker_restarts",
            "Worker processes replaced, by worker slot and reason",
            restarts.clone(),
        );
        let bytes = Family::<BytesLabels, Counter>::default();
        registry.register(
            "transport_bytes",
            "Payload bytes moved to and from workers, by transport and direction",
            bytes.clone(),
        );
        let rejected = Family::<RejectedLabels, Counter>::default();
        registry.register(
            "rejected_calls",
            "Calls that never reached a worker, by reason",
            rejected.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Calls waiting for a free worker",
            queue_depth.clone(),
        );
        let busy_workers = Gauge::default();
        registry.register(
            "busy_workers",
            "Workers running a call",
            busy_workers.clone(),
        );
        let configured = Gauge::<i64>::default();
        configured.set(i64::try_from(workers).unwrap_or(i64::MAX));
        registry.register("workers", "Worker slots in the pool", configured);

        let metrics = Metrics {
            registry,
            transport,
            calls,
            call_duration,
            queue_wait,
            restarts,
            bytes,
            rejected,
            queue_depth,
            busy_workers,
        };
        // Every worker has a series from the start, so dashboards show idle
        // workers as zero rather than as missing.
        for worker in 0..workers {
            metrics
                .calls
                .get_or_create(&CallLabels {
                    worker: worker as u64,
                    outcome: Outcome::Ok.as_str(),
                })
                .inc_by(0);
            for reason in Restart::ALL {
                metrics
                    .restarts
                    .get_or_create(&RestartLabels {
                        worker: worker as u64,
                        reason: reason.as_str(),
                    })
                    .inc_by(0);
            }
        }
        metrics
    }

    /// A call finished on `worker` after `duration` with `outcome`.
    pub fn call_finished(&self, worker: usize, outcome: Outcome, duration: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                worker: worker as u64,
                outcome: outcome.as_str(),
            })
            .inc();
        self.call_duration.observe(duration.as_secs_f64());
    }

    /// A worker took a call that had waited `waited` in the queue.
    pub fn call_started(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    /// `len` payload bytes went to (request) or came from (response) a worker.
    pub fn moved(&self, direction: Direction, len: usize) {
        let direction = match direction {
            Direction::Request => "request",
            Direction::Response => "response",
        };
        self.bytes
            .get_or_create(&BytesLabels {
                transport: self.transport,
                direction,
            })
            .inc_by(len as u64);
    }

    /// Worker slot `worker` got a new process, for `reason`.
    pub fn restarted(&self, worker: usize, reason: Restart) {
        self.restarts
            .get_or_create(&RestartLabels {
                worker: worker as u64,
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A call never reached a worker, for `reason`. Calls that reached one
    /// are counted by [`Metrics::call_finished`] instead.
    pub fn unserved(&self, reason: Unserved) {
        self.rejected
            .get_or_create(&RejectedLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The OpenMetrics text of every metric, with the gauges set to what the
    /// pool reports now.
    pub fn render(&self, queue_depth: usize, busy_workers: usize) -> String {
        self.queue_depth
            .set(i64::try_from(queue_depth).unwrap_or(i64::MAX));
        self.busy_workers
            .set(i64::try_from(busy_workers).unwrap_or(i64::MAX));
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// The warning to log when the metrics endpoint listens on `addr`, an
/// address other hosts may reach: it has no authentication.
pub fn exposure_warning(addr: SocketAddr) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    Some(format!(
        "the metrics endpoint listens on {addr}, which is not loopback, without \
         authentication: whoever reaches it sees the gateway's load and traffic (calls and \
         their outcomes per worker, refusals by reason, queue depth, busy workers, bytes \
         moved, worker restarts). Listen on 127.0.0.1, or put it behind your own access control"
    ))
}

/// What the endpoint needs from the pool at scrape time.
pub trait Scrape: Clone + Send + Sync + 'static {
    fn scrape(&self) -> String;
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    source: impl Scrape,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text::<_>))
        .with_state(Arc::new(source));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_text<S: Scrape>(State(source): State<Arc<S>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, OPENMETRICS_TEXT)], source.scrape())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_endpoint_beyond_loopback_is_warned_about() {
        for local in ["127.0.0.1:9100", "[::1]:9100"] {
            assert_eq!(exposure_warning(local.parse().unwrap()), None, "{local}");
        }
        for reachable in ["0.0.0.0:9100", "10.1.2.3:9100", "[::]:9100"] {
            let warning = exposure_warning(reachable.parse().unwrap()).expect(reachable);
            assert!(warning.contains("without authentication"), "{warning}");
            assert!(warning.contains("refusals"), "{warning}");
        }
    }

    #[test]
    fn every_worker_has_series_from_the_start_and_counts_add_up() {
        let metrics = Metrics::new(2, "shm");
        metrics.call_finished(1, Outcome::Ok, Duration::from_millis(3));
        metrics.call_finished(
            1,
            Outcome::Failed(ErrorKind::WorkerCrashed),
            Duration::from_millis(3),
        );
        metrics.restarted(1, Restart::Recycled);
        metrics.moved(Direction::Request, 100);
        metrics.moved(Direction::Request, 28);
        metrics.unserved(Unserved::Refused(ErrorKind::QueueFull));
        metrics.unserved(Unserved::CallerLeft);
        let text = metrics.render(5, 2);

        for line in [
            r#"mystic_calls_total{worker="0",outcome="ok"} 0"#,
            r#"mystic_calls_total{worker="1",outcome="ok"} 1"#,
            r#"mystic_calls_total{worker="1",outcome="worker-crashed"} 1"#,
            r#"mystic_worker_restarts_total{worker="0",reason="crashed"} 0"#,
            r#"mystic_worker_restarts_total{worker="1",reason="recycled"} 1"#,
            r#"mystic_worker_restarts_total{worker="1",reason="crashed"} 0"#,
            r#"mystic_transport_bytes_total{transport="shm",direction="request"} 128"#,
            r#"mystic_rejected_calls_total{reason="queue-full"} 1"#,
            r#"mystic_rejected_calls_total{reason="caller-left"} 1"#,
            "mystic_call_duration_seconds_count 2",
            "mystic_queue_depth 5",
            "mystic_busy_workers 2",
            "mystic_workers 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
