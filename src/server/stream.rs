//! The `ExecuteStream` RPC: many calls over one bidirectional stream.
//!
//! One task per stream ([`serve_stream`]) reads the client's calls, queues
//! each on the pool exactly as a unary call is queued (the same queue,
//! bounds and metrics; a worker still runs one call at a time), and sends
//! each outcome back as soon as it is known, as many per message as are
//! ready (up to [`BATCH_BYTES`] of them, or one larger); a message that is
//! not full waits until [`MESSAGE_INTERVAL`] has passed since the last one,
//! so that a client reading many small results reads them by the score,
//! while results that come further apart go at once. A call's failure
//! in the gateway travels as its [`pb::CallError`], with the code and kind
//! a unary call would get as its status; the stream goes on.
//!
//! Bounds: at most [`MAX_IN_FLIGHT`] calls of a stream are pending at once
//! (past that the task stops reading, and HTTP/2 flow control holds the
//! client back); results wait for a slow client up to one message's worth
//! before the task stops taking them (and the items of a streamed call stop
//! being produced). Every result counts as undelivered until HTTP/2 has
//! taken it (`delivery.rs`): a stream whose undelivered results reach its
//! share of `--max-undelivered-bytes` ([`Share`](crate::pool::Share))
//! reads no more calls, and those of its calls that no worker has started
//! are held back (a worker hands them back) until the client reads; then
//! they are queued again (by the share's own task). A call the queue has no
//! room for (full, or its byte bound reached) waits in the task, which
//! reads nothing more meanwhile, and is queued again with backoff: a long
//! map waits for room instead of failing.
//!
//! Deadlines: the stream's `grpc-timeout` bounds the whole stream (when it
//! passes, the stream ends with `DEADLINE_EXCEEDED`); each call's deadline
//! is the earliest of that, `--call-timeout` and the stream's
//! `mystic-call-timeout`, both counted from the call's arrival.
//!
//! The stream ends when the client has closed its side and every call is
//! answered; when the client goes away (every call not yet started is
//! forgotten at once: see [`crate::pool::PendingCall`]); or when the gateway
//! stops (it takes no more calls, answers those it has, then ends with
//! `UNAVAILABLE`).
//!
//! Each call is admitted as a unary one is (`admission.rs`: parsed, its
//! segments claimed, its function resolved, queued), with what is the
//! stream's own: its deadline, its share, and the functions its calls
//! brought (up to [`HELD_FUNCTIONS`](super::admission::HELD_FUNCTIONS),
//! [`HeldFunctions`]), so that its calls by digest resolve for as long as
//! it lasts even if the gateway's cache evicts them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, BoxStream, SelectAll};
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::admission::{Admission, Admitted, HeldFunctions};
use super::deadline::earliest;
use super::refusals::Refusals;
use crate::error::GatewayError;
use crate::pb;
use crate::pool::{Deadline, Delivery, OwnedShare, PendingCall, Undelivered};

/// Calls of one stream pending at once, at most.
pub const MAX_IN_FLIGHT: usize = 16_384;
/// Results, or calls, sent together up to this many payload bytes (a
/// larger one goes alone). The gateway's message limit leaves room for it.
pub const BATCH_BYTES: usize = 64 << 10;
/// The least time between two messages of a stream that are not full: a
/// client reading many small results reads them a message at a time.
const MESSAGE_INTERVAL: Duration = Duration::from_micros(1000);
/// Results sent together, at most.
const BATCH_RESULTS: usize = 1024;
/// What a result costs in a message besides its payload (id, tags, lengths).
const RESULT_OVERHEAD: usize = 32;
/// How long a call waits before it is queued again while the queue is full.
const FIRST_REQUEUE: Duration = Duration::from_millis(2);
const MAX_REQUEUE: Duration = Duration::from_millis(100);

/// Calls in flight the gateway suggests to a stream's client (the
/// `mystic-window` header): a few per worker, so that every worker has its
/// next call waiting, within the stream's bound.
pub fn suggested_window(workers: usize) -> usize {
    (8 * workers).clamp(256, MAX_IN_FLIGHT)
}

/// What a stream's task needs from the service.
#[derive(Debug, Clone)]
pub struct StreamContext {
    /// The pool, the function cache, the door and the payload limit.
    pub admission: Admission,
    pub refusals: Refusals,
    /// The stream's own deadline (its `grpc-timeout`).
    pub deadline: Option<Deadline>,
    /// Each call's budget from its arrival: `--call-timeout` and
    /// `mystic-call-timeout`, the smaller.
    pub per_call: Option<Duration>,
    /// Cancelled when the gateway starts to stop.
    pub stopping: CancellationToken,
}

/// A result, and what it holds of the results budget until delivered.
type Outcome = (pb::StreamResult, Undelivered);
type Outcomes = BoxStream<'static, Outcome>;
/// The stream's messages, each with what its results hold (see
/// `delivery::Delivering`).
pub type Message = (Result<pb::StreamResponse, Status>, Undelivered);
type Responses = mpsc::Sender<Message>;

/// Serves one stream until it ends (see the module doc), sending its
/// responses to `out`.
pub async fn serve_stream(
    context: StreamContext,
    mut requests: Streaming<pb::StreamRequest>,
    out: Responses,
) {
    let expired = crate::pool::expiry(context.deadline);
    tokio::pin!(expired);
    let share = context.admission.pool.share();
    let mut stream = Stream {
        context,
        share,
        held: HeldFunctions::default(),
        incoming: VecDeque::new(),
        waiting: None,
        reading: true,
        ending: None,
        pending: SelectAll::new(),
        ready: VecDeque::new(),
        ready_bytes: 0,
    };
    let mut last_sent = Instant::now()
        .checked_sub(MESSAGE_INTERVAL)
        .unwrap_or_else(Instant::now);
    while !stream.is_over() {
        let taking = stream.ready.len() < BATCH_RESULTS && stream.ready_bytes < BATCH_BYTES;
        // Made before the share is looked at: a delivery after the look
        // wakes it (one before it is seen by the look).
        let share = Arc::clone(stream.share.share());
        let delivered = share.delivered();
        let could_read =
            stream.reading && stream.waiting.is_none() && stream.pending.len() < MAX_IN_FLIGHT;
        let over_share = could_read && share.is_full();
        let reading = could_read && !over_share;
        let retry_at = stream.waiting.as_ref().map(|waiting| waiting.at);
        // Results go out at once, unless a message went less than
        // MESSAGE_INTERVAL ago: then they wait for it to pass, or for a
        // full message.
        let send_at = (!stream.ready.is_empty()).then(|| {
            if taking {
                last_sent + MESSAGE_INTERVAL
            } else {
                last_sent
            }
        });
        let send_now = send_at.is_some_and(|at| at <= Instant::now());
        tokio::select! {
            biased;
            () = out.closed() => return,
            budget = &mut expired => {
                let ended = Err(GatewayError::Timeout(budget).into());
                let _ = out.send((ended, Undelivered::none())).await;
                return;
            }
            () = stream.context.stopping.cancelled(), if stream.reading => stream.stop(),
            Some(result) = stream.pending.next(), if taking && !stream.pending.is_empty() => {
                stream.push(result);
                // Whatever else is ready goes in the same message.
                while stream.ready.len() < BATCH_RESULTS && stream.ready_bytes < BATCH_BYTES {
                    match stream.pending.next().now_or_never() {
                        Some(Some(result)) => stream.push(result),
                        _ => break,
                    }
                }
            }
            permit = out.reserve(), if send_now => match permit {
                Ok(permit) => {
                    let (batch, undelivered) = stream.take_batch();
                    permit.send((Ok(batch), undelivered));
                    last_sent = Instant::now();
                }
                Err(_closed) => return,
            },
            () = crate::timing::sleep_until(send_at), if !send_now && send_at.is_some() => {}
            // Reading stopped for the share: on again once the client reads.
            () = delivered, if over_share => {}
            () = crate::timing::sleep_until(retry_at), if retry_at.is_some() => {
                let waiting = stream.waiting.take().expect("a waiting call");
                stream.incoming.push_front(waiting.call);
                stream.submit_incoming(waiting.backoff).await;
            }
            message = requests.message(), if reading => match message {
                Ok(Some(request)) => {
                    stream.incoming.extend(request.calls);
                    stream.submit_incoming(Duration::ZERO).await;
                }
                Ok(None) => stream.reading = false,
                // The client cancelled, or its stream broke: nobody to answer.
                Err(_) => return,
            },
        }
    }
    if let Some(status) = stream.ending.take() {
        let _ = out.send((Err(status), Undelivered::none())).await;
    }
}

/// A call the queue had no room for, and when to try again.
struct Waiting {
    call: pb::StreamCall,
    at: Instant,
    backoff: Duration,
}

/// One stream's state.
struct Stream {
    context: StreamContext,
    /// Its share of the results budget, and its calls held back.
    share: OwnedShare,
    /// The functions its calls brought.
    held: HeldFunctions,
    /// Calls read, not yet queued.
    incoming: VecDeque<pb::StreamCall>,
    /// The first of them, while the queue has no room for it.
    waiting: Option<Waiting>,
    /// Whether more calls are read.
    reading: bool,
    /// How the stream ends once every call is answered (else: OK).
    ending: Option<Status>,
    /// Each pending call's outcomes (one, or a streamed call's items and then one).
    pending: SelectAll<Outcomes>,
    /// Outcomes not yet sent.
    ready: VecDeque<Outcome>,
    ready_bytes: usize,
}

impl Stream {
    fn is_over(&self) -> bool {
        !self.reading
            && self.incoming.is_empty()
            && self.waiting.is_none()
            && self.pending.is_empty()
            && self.ready.is_empty()
    }

    /// The gateway is stopping: no more calls; those pending are answered.
    fn stop(&mut self) {
        self.reading = false;
        self.incoming.clear();
        self.waiting = None;
        self.ending = Some(GatewayError::ShuttingDown.into());
    }

    /// Queues the calls read, in order, until one finds no room in the
    /// queue: that one waits (its backoff grows from `backoff`).
    async fn submit_incoming(&mut self, backoff: Duration) {
        while let Some(call) = self.incoming.pop_front() {
            let id = call.id;
            match self.queue(&call).await {
                Ok(outcomes) => self.pending.push(outcomes),
                Err(
                    GatewayError::QueueFull { .. }
                    | GatewayError::QueueBytesFull { .. }
                    | GatewayError::ReceivingFull { .. },
                ) => {
                    let backoff = (backoff * 2).clamp(FIRST_REQUEUE, MAX_REQUEUE);
                    self.waiting = Some(Waiting {
                        call,
                        at: Instant::now() + backoff,
                        backoff,
                    });
                    return;
                }
                Err(GatewayError::ShuttingDown) => return self.stop(),
                Err(err) => {
                    self.context.refusals.count(&err);
                    self.push(failed(id, &err));
                }
            }
        }
    }

    /// Queues one call; its outcomes, as results.
    async fn queue(&mut self, call: &pb::StreamCall) -> Result<Outcomes, GatewayError> {
        let context = &self.context;
        let deadline = earliest(context.deadline, context.per_call.map(Deadline::after));
        let share = Some(self.share.share());
        let Admitted {
            call: pending,
            items,
        } = context
            .admission
            .admit(
                call.payload.clone(),
                deadline,
                call.items,
                share,
                Some(&mut self.held),
            )
            .await?;
        let (id, refusals) = (call.id, context.refusals.clone());
        Ok(match items {
            Some(items) => items_then_outcome(id, items, pending, refusals),
            None => pending
                .outcome()
                .map(move |outcome| finished(id, outcome, &refusals))
                .into_stream()
                .boxed(),
        })
    }

    fn push(&mut self, outcome: Outcome) {
        self.ready_bytes += result_size(&outcome.0);
        self.ready.push_back(outcome);
    }

    /// The next message: ready results up to [`BATCH_BYTES`] (at least
    /// one), and what they hold of the results budget.
    fn take_batch(&mut self) -> (pb::StreamResponse, Undelivered) {
        take_batch(&mut self.ready, &mut self.ready_bytes)
    }
}

/// The first results of `ready` that fit one message (at least one), what
/// they hold, and their bytes taken off `bytes`.
fn take_batch(
    ready: &mut VecDeque<Outcome>,
    bytes: &mut usize,
) -> (pb::StreamResponse, Undelivered) {
    let mut results = Vec::new();
    let mut held = Undelivered::none();
    let mut taken = 0;
    while let Some((next, _)) = ready.front() {
        let size = result_size(next);
        if !results.is_empty() && (taken + size > BATCH_BYTES || results.len() >= BATCH_RESULTS) {
            break;
        }
        taken += size;
        let (result, undelivered) = ready.pop_front().expect("a front");
        results.push(result);
        held.join(undelivered);
    }
    *bytes -= taken;
    (pb::StreamResponse { results }, held)
}

/// A streamed call's results: each chunk of items as the worker sends it,
/// then its last outcome (which may come first: a refusal, or a deadline
/// that passed while it was queued).
fn items_then_outcome(
    id: u64,
    items: mpsc::Receiver<Delivery>,
    call: PendingCall,
    refusals: Refusals,
) -> Outcomes {
    let outcome = call.outcome().boxed();
    stream::unfold(Some((items, outcome)), move |state| {
        let refusals = refusals.clone();
        async move {
            let (mut items, mut outcome) = state?;
            tokio::select! {
                biased;
                // The worker is done with the items before it answers.
                Some(chunk) = items.recv() => {
                    let result = pb::StreamResult {
                        id,
                        outcome: Some(pb::stream_result::Outcome::Items(chunk.payload)),
                    };
                    Some(((result, chunk.undelivered), Some((items, outcome))))
                }
                last = &mut outcome => Some((finished(id, last, &refusals), None)),
            }
        }
    })
    .boxed()
}

fn result_size(result: &pb::StreamResult) -> usize {
    use pb::stream_result::Outcome;
    RESULT_OVERHEAD
        + match &result.outcome {
            Some(Outcome::Payload(bytes) | Outcome::Items(bytes)) => bytes.len(),
            Some(Outcome::Error(error)) => error.message.len() + error.kind.len(),
            None => 0,
        }
}

/// A finished call's last result; a refusal decided after it was queued
/// (`--max-queue-wait`) is counted as one.
fn finished(id: u64, outcome: Result<Delivery, GatewayError>, refusals: &Refusals) -> Outcome {
    match outcome {
        Ok(Delivery {
            payload,
            undelivered,
        }) => {
            let result = pb::StreamResult {
                id,
                outcome: Some(pb::stream_result::Outcome::Payload(payload)),
            };
            (result, undelivered)
        }
        Err(err) => {
            if matches!(err, GatewayError::QueueWait(_)) {
                refusals.count(&err);
            }
            failed(id, &err)
        }
    }
}

/// The result of a call that failed in the gateway (it holds nothing).
fn failed(id: u64, err: &GatewayError) -> Outcome {
    let kind = err.kind();
    let result = pb::StreamResult {
        id,
        outcome: Some(pb::stream_result::Outcome::Error(pb::CallError {
            code: kind.code() as i32,
            kind: kind.as_str().to_owned(),
            message: err.to_string(),
        })),
    };
    (result, Undelivered::none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn payload(id: u64, len: usize) -> Outcome {
        let result = pb::StreamResult {
            id,
            outcome: Some(pb::stream_result::Outcome::Payload(Bytes::from(vec![
                0;
                len
            ]))),
        };
        (result, Undelivered::none())
    }

    #[test]
    fn the_window_is_a_few_calls_per_worker_within_the_bound() {
        assert_eq!(suggested_window(1), 256);
        assert_eq!(suggested_window(100), 800);
        assert_eq!(suggested_window(1_000_000), MAX_IN_FLIGHT);
    }

    fn sizes(ready: &VecDeque<Outcome>) -> usize {
        ready.iter().map(|(result, _)| result_size(result)).sum()
    }

    fn ids(batch: &(pb::StreamResponse, Undelivered)) -> Vec<u64> {
        batch.0.results.iter().map(|result| result.id).collect()
    }

    #[test]
    fn a_batch_holds_what_fits_and_at_least_one_result() {
        let budget = crate::budget::Budget::new(usize::MAX);
        let counted = |(result, _): Outcome| {
            let held = budget.count(result_size(&result));
            (result, Undelivered::new(held, None))
        };
        let mut ready: VecDeque<Outcome> = VecDeque::new();
        ready.push_back(counted(payload(0, 10)));
        ready.push_back(counted(payload(1, BATCH_BYTES)));
        ready.push_back(counted(payload(2, 10)));
        let mut bytes = sizes(&ready);
        let first = take_batch(&mut ready, &mut bytes);
        assert_eq!(ids(&first), [0]);
        // A result larger than a batch goes alone; the next batch takes the rest.
        let second = take_batch(&mut ready, &mut bytes);
        assert_eq!(ids(&second), [1]);
        let third = take_batch(&mut ready, &mut bytes);
        assert_eq!(ids(&third), [2]);
        assert!(ready.is_empty());
        assert_eq!(bytes, 0);
        // Each message holds its own results' bytes until it goes.
        let held = budget.used();
        drop(second);
        assert_eq!(
            budget.used(),
            held - result_size(&payload(1, BATCH_BYTES).0)
        );
        drop((first, third));
        assert_eq!(budget.used(), 0);
        // Many small ones: at most BATCH_RESULTS a message.
        ready.extend((0..BATCH_RESULTS as u64 + 5).map(|id| payload(id, 1)));
        bytes = sizes(&ready);
        assert_eq!(
            take_batch(&mut ready, &mut bytes).0.results.len(),
            BATCH_RESULTS
        );
        assert_eq!(take_batch(&mut ready, &mut bytes).0.results.len(), 5);
    }

    #[test]
    fn a_failure_carries_the_code_and_kind_of_a_unary_status() {
        let (result, _) = failed(7, &GatewayError::Timeout(Duration::from_secs(1)));
        let Some(pb::stream_result::Outcome::Error(error)) = result.outcome else {
            panic!("not an error: {result:?}");
        };
        assert_eq!(result.id, 7);
        assert_eq!(error.code, tonic::Code::DeadlineExceeded as i32);
        assert_eq!(error.kind, "call-timeout");
        assert!(error.message.contains("deadline"), "{}", error.message);
    }
}
