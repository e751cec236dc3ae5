//! What a connection must do to keep its place (`places.rs`), TCP or Unix
//! socket alike, as `serve.rs` applies it ([`Deadlines`]): finish its TLS
//! and HTTP/2 handshakes and send an admitted call within
//! `--handshake-timeout`; once it has had no admitted call open for
//! `--idle-connection-timeout`, it is closed with a GOAWAY (a call that
//! crossed the GOAWAY still runs).
//!
//! Idleness is about admitted calls, not bytes: keepalive pings, health
//! checks of a gateway with a token and calls the token check refused earn
//! a connection nothing. [`OpenCallsLayer`] puts a [`Call`] in every
//! request, the token check (`auth.rs`) admits it, and from then until its
//! response has ended it counts in its connection's [`Activity`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::deadline::Arrival;
use crate::pool::OwnedShare;

/// After its GOAWAY, how long a connection with no admitted call open is
/// kept: time for a call the client sent as the GOAWAY left to arrive (a
/// round trip). A peer that answers the GOAWAY's ping is closed on sooner
/// by HTTP/2 itself; one that never answers it is cut off then.
pub const CLOSING_GRACE: Duration = Duration::from_secs(1);

/// How long a connection may go without an admitted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// From its accept to its first admitted call (TLS and HTTP/2
    /// handshakes included).
    pub handshake: Duration,
    /// From the end of its last admitted call.
    pub idle: Duration,
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdue {
    /// No admitted call within the handshake deadline.
    Handshake,
    /// No admitted call open for the idle timeout.
    Idle,
}

/// What to do with a connection, as of now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it; ask again at `until`.
    Keep {
        until: Instant,
    },
    Close(Overdue),
}

/// What a connection is doing: its admitted calls open, and when the last
/// one opened or closed.
#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    calls: Mutex<Calls>,
    /// Told of the first admitted call (which may make the connection
    /// idle before its handshake deadline).
    first_call: Notify,
}

#[derive(Debug, Default)]
struct Calls {
    open: usize,
    /// None until the first admitted call.
    last: Option<Instant>,
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Self {
        Activity {
            accepted: Instant::now(),
            calls: Mutex::default(),
            first_call: Notify::new(),
        }
    }

    pub fn accepted(&self) -> Instant {
        self.accepted
    }

    pub fn open_calls(&self) -> usize {
        self.calls().open
    }

    /// Waits for the first admitted call (at once if there was one).
    pub async fn first_call(&self) {
        self.first_call.notified().await;
    }

    /// Whether the connection has earned its place, as of now.
    pub fn verdict(&self, deadlines: Deadlines) -> Verdict {
        let now = Instant::now();
        let calls = self.calls();
        let (until, overdue) = match calls.last {
            // A call is open: it cannot be idle before one more period.
            _ if calls.open > 0 => (now + deadlines.idle, None),
            None => (
                self.accepted + deadlines.handshake,
                Some(Overdue::Handshake),
            ),
            Some(last) => (last + deadlines.idle, Some(Overdue::Idle)),
        };
        match overdue {
            Some(overdue) if now >= until => Verdict::Close(overdue),
            _ => Verdict::Keep { until },
        }
    }

    fn opened(&self) {
        let mut calls = self.calls();
        calls.open += 1;
        if calls.last.replace(Instant::now()).is_none() {
            self.first_call.notify_one();
        }
    }

    fn closed(&self) {
        let mut calls = self.calls();
        calls.open -= 1;
        calls.last = Some(Instant::now());
    }

    fn calls(&self) -> MutexGuard<'_, Calls> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

/// The connection info every request carries (the accept loop puts it in
/// the request's extensions).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub activity: Arc<Activity>,
    /// The share of the results budget of its unary calls, made at the
    /// first one and closed with the connection.
    pub unary_share: Arc<OnceLock<OwnedShare>>,
}

/// One call on a connection, in its request's extensions. Once admitted,
/// it is open until every clone of it is gone (the request, and the
/// response's body once it has ended).
#[derive(Debug, Clone)]
pub struct Call(Arc<CallState>);

#[derive(Debug)]
struct CallState {
    activity: Arc<Activity>,
    admitted: AtomicBool,
}

impl Call {
    /// A call on the connection doing `activity`, not admitted yet.
    pub fn new(activity: Arc<Activity>) -> Self {
        Call(Arc::new(CallState {
            activity,
            admitted: AtomicBool::new(false),
        }))
    }

    /// Counts the call as activity on its connection (once, however often
    /// it is admitted).
    pub fn admit(&self) {
        if !self.0.admitted.swap(true, Ordering::AcqRel) {
            self.0.activity.opened();
        }
    }
}

impl Drop for CallState {
    fn drop(&mut self) {
        if *self.admitted.get_mut() {
            self.activity.closed();
        }
    }
}

/// A tower layer that stamps each request's [`Arrival`] (for its deadline)
/// and gives it a [`Call`] on its connection, kept open until its response
/// has ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenCallsLayer;

impl<S> tower::Layer<S> for OpenCallsLayer {
    type Service = OpenCalls<S>;

    fn layer(&self, inner: S) -> OpenCalls<S> {
        OpenCalls { inner }
    }
}

/// The service [`OpenCallsLayer`] makes.
#[derive(Debug, Clone)]
pub struct OpenCalls<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for OpenCalls<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<CallBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(Arrival(Instant::now()));
        let call = request
            .extensions()
            .get::<ConnectionInfo>()
            .map(|info| Call::new(Arc::clone(&info.activity)));
        if let Some(call) = &call {
            request.extensions_mut().insert(call.clone());
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| CallBody { body, _call: call }))
        })
    }
}

/// A response body that keeps its call open until it is dropped.
#[derive(Debug)]
pub struct CallBody<B> {
    body: B,
    _call: Option<Call>,
}

impl<B: HttpBody + Unpin> HttpBody for CallBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINES: Deadlines = Deadlines {
        handshake: Duration::from_secs(10),
        idle: Duration::from_secs(300),
    };

    fn keep_for(after: Duration) -> Verdict {
        Verdict::Keep {
            until: Instant::now() + after,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_an_admitted_call_is_overdue_at_the_handshake_deadline() {
        let activity = Arc::new(Activity::new());
        assert_eq!(activity.verdict(DEADLINES), keep_for(DEADLINES.handshake));
        // A call the token check refused is never admitted.
        let refused = Call::new(Arc::clone(&activity));
        tokio::time::advance(DEADLINES.handshake).await;
        assert_eq!(
            activity.verdict(DEADLINES),
            Verdict::Close(Overdue::Handshake)
        );
        drop(refused);
        assert_eq!(activity.open_calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_admitted_call_keeps_its_connection_until_an_idle_period_after_it_ends() {
        let activity = Arc::new(Activity::new());
        let call = Call::new(Arc::clone(&activity));
        call.admit();
        call.admit();
        let request_side = call.clone();
        assert_eq!(activity.open_calls(), 1);
        // Open for an hour: never idle meanwhile.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(activity.verdict(DEADLINES), keep_for(DEADLINES.idle));
        drop(call);
        assert_eq!(activity.open_calls(), 1, "the request still holds it");
        drop(request_side);
        assert_eq!(activity.open_calls(), 0);
        assert_eq!(activity.verdict(DEADLINES), keep_for(DEADLINES.idle));
        tokio::time::advance(DEADLINES.idle - Duration::from_millis(1)).await;
        assert!(matches!(activity.verdict(DEADLINES), Verdict::Keep { .. }));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(activity.verdict(DEADLINES), Verdict::Close(Overdue::Idle));
    }
}
