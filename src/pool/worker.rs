//! The actor that owns one worker slot: it prepares the worker's channel,
//! spawns the process, waits for its handshake, pulls jobs from the queue one
//! at a time (sending each call's function along the first time this process
//! needs it, and again if the process says it no longer holds it; a call
//! that streams its items is a conversation, chunk after chunk, paced by its
//! caller), notices when the process dies (while idle or mid-call), answers
//! the call it was running with a crash error, and starts a new process with
//! backoff; a process due for recycling is replaced at once, between calls.
//!
//! Results: each one takes its bytes of the results budget before it is
//! handed on, waiting (busy) while there is no room; a call whose caller
//! holds its share of results undelivered is handed back to it, not run
//! (see `results.rs`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::process::describe_exit;
use super::queue::{Job, JobReceiver, JobResult, Popped, expiry};
use super::recycle::Recycle;
use super::restart::Backoff;
use super::results::{Delivery, Share, Undelivered};
use super::spawn::{Spawned, Spawner, WorkerProcess};
use super::startup::StartError;
use super::status::{StatusBoard, WorkerState};
use crate::budget::Budget;
use crate::error::{Direction, GatewayError};
use crate::functions::{self, KnownFunctions, WorkerCall};
use crate::items;
use crate::metrics::{Metrics, Outcome, Restart, Unserved};
use crate::segments::{self, ChannelError, SegmentError, WorkerSegments};
use crate::transport::{self, Transport, TransportError};

/// How long a worker whose stream broke gets to finish exiting before it is
/// killed.
pub(super) const EXIT_AFTER_BREAK: Duration = Duration::from_secs(2);

/// A worker up this long (or that took a call) was healthy: its death is
/// answered with a new worker at once, not after a backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(1);

/// Why a worker stopped serving.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The pool is shutting down.
    Shutdown,
    /// The process died or broke the protocol.
    Died,
    /// The process was killed because its call ran past the deadline.
    TimedOut,
    /// The process reached a recycling bound.
    Recycled,
    /// The process did not start.
    FailedStart,
}

/// Why a call did not produce a response.
enum Failure {
    /// The channel failed (the worker closed it, or broke the protocol).
    Transport(TransportError),
    /// The process exited while the channel was still open.
    Exited(std::io::Result<std::process::ExitStatus>),
}

/// One worker slot's actor.
#[derive(Debug)]
pub struct WorkerActor<S> {
    pub index: usize,
    pub spawner: Arc<S>,
    pub transport: Arc<transport::Spec>,
    pub jobs: JobReceiver,
    pub board: StatusBoard,
    /// Cancelled when workers must stop now, even mid-call.
    pub abort: CancellationToken,
    pub startup_timeout: Duration,
    pub recycle: Recycle,
    pub metrics: Arc<Metrics>,
    /// Results finished, not yet delivered.
    pub results: Arc<Budget>,
}

impl<S: Spawner> WorkerActor<S> {
    /// Runs the slot until the pool shuts down. The outcome of the first start
    /// goes to `first_start`; if that start fails, the slot gives up.
    pub async fn run(self, first_start: oneshot::Sender<Result<(), StartError>>) {
        let mut first_start = Some(first_start);
        let mut backoff = Backoff::default();
        while !self.abort.is_cancelled() {
            self.board.update(self.index, |slot| {
                slot.state = WorkerState::Starting;
                slot.pid = None;
            });
            let started = tokio::select! {
                started = self.start() => started,
                () = self.abort.cancelled() => break,
            };
            let ended = match started {
                Ok((mut process, mut transport, segments)) => {
                    if let Some(report) = first_start.take() {
                        let _ = report.send(Ok(()));
                    }
                    let (up_since, mut served) = (Instant::now(), 0);
                    let channel = Channel {
                        transport: &mut transport,
                        segments: &segments,
                    };
                    let ended = self.serve(&mut process, channel, &mut served).await;
                    // A worker that took a call or ran a while was healthy: if it
                    // died, it is replaced at once. One that dies idle right
                    // after starting, again and again, is restarted ever later.
                    if served > 0 || up_since.elapsed() >= HEALTHY_RUN {
                        backoff.reset();
                    }
                    drop(transport);
                    if ended == Ended::Recycled {
                        // It exits on EOF; its replacement need not wait for that.
                        tokio::spawn(process.stop());
                    } else {
                        process.stop().await;
                    }
                    ended
                }
                Err(StartError::Stopping) if self.abort.is_cancelled() => break,
                Err(err) => {
                    if let Some(report) = first_start.take() {
                        let _ = report.send(Err(err));
                        break;
                    }
                    error!(worker = self.index, cause = %err, "worker failed to start; retrying");
                    Ended::FailedStart
                }
            };
            let reason = match ended {
                Ended::Shutdown => break,
                Ended::Died => Restart::Crashed,
                Ended::TimedOut => Restart::TimedOut,
                Ended::Recycled => Restart::Recycled,
                Ended::FailedStart => Restart::FailedStart,
            };
            self.metrics.restarted(self.index, reason);
            if reason == Restart::Recycled {
                self.board.update(self.index, |slot| {
                    slot.restarts += 1;
                    slot.recycled += 1;
                });
                continue;
            }
            self.board.update(self.index, |slot| {
                slot.state = WorkerState::Restarting;
                slot.pid = None;
                slot.restarts += 1;
            });
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = self.abort.cancelled() => break,
            }
        }
        self.board.update(self.index, |slot| {
            slot.state = WorkerState::Stopped;
            slot.pid = None;
        });
    }

    /// Prepares the channel, spawns a process and waits for its handshake.
    async fn start(&self) -> Result<(S::Process, Transport, WorkerSegments), StartError> {
        let mut prepared = self
            .transport
            .prepare()
            .map_err(|source| StartError::Transport {
                index: self.index,
                source,
            })?;
        let (segments, worker_segments) =
            WorkerSegments::pair().map_err(|err| StartError::Transport {
                index: self.index,
                source: TransportError::Io(err),
            })?;
        let stdio = prepared.child_stdio();
        let Spawned { mut process, pipes } = self
            .spawner
            .spawn(self.index, &prepared.worker_args(), stdio, worker_segments)
            .await?;
        let mut transport = prepared.connect(pipes);
        let pid = process.pid();
        self.board.update(self.index, |slot| slot.pid = Some(pid));

        // A worker that dies before its handshake must not leave us waiting for
        // a connection that will never come.
        let handshake = async {
            tokio::select! {
                done = transport.handshake() => done,
                _ = process.wait() => Err(TransportError::Closed),
            }
        };
        match tokio::time::timeout(self.startup_timeout, handshake).await {
            Ok(Ok(())) => {
                info!(worker = self.index, pid, "worker ready");
                Ok((process, transport, segments))
            }
            Ok(Err(err)) => {
                drop(transport);
                let exit = process.wait_for(EXIT_AFTER_BREAK).await;
                process.settle_stderr().await;
                let tail = process.stderr_tail();
                process.stop().await;
                Err(StartError::from_failed_handshake(
                    self.index,
                    self.spawner.program(),
                    exit,
                    &tail,
                    err,
                ))
            }
            Err(_elapsed) => {
                process.kill();
                drop(transport);
                process.stop().await;
                Err(StartError::TimedOut {
                    index: self.index,
                    limit: self.startup_timeout,
                })
            }
        }
    }

    /// Serves jobs one at a time until the process ends or the pool stops;
    /// `served` counts the calls it took (whatever their outcome).
    async fn serve(
        &self,
        process: &mut S::Process,
        mut channel: Channel<'_>,
        served: &mut u64,
    ) -> Ended {
        let pid = process.pid();
        let mut known = KnownFunctions::default();
        loop {
            if *served > 0 && self.recycle.due(*served, pid) {
                info!(
                    worker = self.index,
                    pid, served, "worker reached its recycling bound; replacing it"
                );
                return Ended::Recycled;
            }
            self.set_state(WorkerState::Idle);
            let job = tokio::select! {
                biased;
                () = self.abort.cancelled() => return Ended::Shutdown,
                exit = process.wait() => {
                    let cause = exit.map_or_else(|err| err.to_string(), describe_exit);
                    warn!(worker = self.index, pid, cause, "worker exited while idle; restarting it");
                    return Ended::Died;
                }
                job = self.jobs.recv() => match job {
                    Ok(job) => job,
                    Err(_closed) => return Ended::Shutdown,
                },
            };
            // Its caller holds its share of results undelivered: held back
            // for it, not run, until it reads (a caller gone gets it back).
            let job = match job.share.clone() {
                Some(share) if share.is_full() => match share.park(job) {
                    Ok(()) => continue,
                    Err(job) => job,
                },
                _ => job,
            };
            let Job {
                claim,
                deadline,
                mut reply,
                items,
                queued_at,
                share,
            } = job;
            let started = Instant::now();
            let expired = deadline.filter(|deadline| deadline.at <= started);
            let (call, queued) = match claim.pop() {
                Popped::Run(call, queued) => (call, queued),
                // Its caller gave up waiting (--max-queue-wait) and was told.
                Popped::Answered => continue,
                Popped::Abandoned => {
                    self.metrics.unserved(if expired.is_some() {
                        Unserved::ExpiredInQueue
                    } else {
                        Unserved::CallerLeft
                    });
                    continue;
                }
            };
            drop(queued);
            if let Some(deadline) = expired {
                // Its caller has been told (or is about to be) that it timed out.
                self.metrics.unserved(Unserved::ExpiredInQueue);
                let _ = reply.send(Err(GatewayError::Timeout(deadline.budget)));
                continue;
            }
            if reply.is_closed() {
                self.metrics.unserved(Unserved::CallerLeft);
                debug!(
                    worker = self.index,
                    "caller left before its call started; dropped"
                );
                continue;
            }
            self.metrics.call_started(started - queued_at);

            self.set_state(WorkerState::Busy);
            // `ran_for` is the call's own time, not including waiting for a
            // dead worker's exit status.
            let answer = |reply: oneshot::Sender<JobResult>, result: JobResult, ran_for| {
                self.metrics
                    .call_finished(self.index, Outcome::of(&result), ran_for);
                // A caller that left mid-call gets nothing; that is fine.
                let _ = reply.send(result);
            };
            let share = share.as_deref();
            let outcome = tokio::select! {
                outcome = self.converse(&mut channel, &call, items, share, &mut known) => outcome.map_err(Failure::Transport),
                // Watched during the call too: children the function forked
                // may hold the channel open long after the worker died.
                exit = process.wait() => Err(Failure::Exited(exit)),
                budget = expiry(deadline) => {
                    process.kill();
                    warn!(worker = self.index, pid, "call ran past its deadline; replacing the worker");
                    answer(reply, Err(GatewayError::Timeout(budget)), started.elapsed());
                    return Ended::TimedOut;
                }
                () = self.abort.cancelled() => {
                    process.kill();
                    answer(reply, Err(GatewayError::ShuttingDown), started.elapsed());
                    return Ended::Shutdown;
                }
            };
            *served += 1;
            match outcome {
                Ok(payload) => {
                    let ran_for = started.elapsed();
                    self.metrics.moved(Direction::Response, payload.len());
                    // Room for it among the results not yet delivered,
                    // unless its caller has gone meanwhile.
                    let undelivered = tokio::select! {
                        undelivered = self.undelivered(payload.len(), share) => Some(undelivered),
                        () = reply.closed() => None,
                        () = self.abort.cancelled() => {
                            answer(reply, Err(GatewayError::ShuttingDown), ran_for);
                            return Ended::Shutdown;
                        }
                    };
                    // Idle before the caller hears back, so that what it asks
                    // next (GetWorkers) sees the worker free.
                    self.finish_call();
                    if let Some(undelivered) = undelivered {
                        let delivery = Delivery {
                            payload,
                            undelivered,
                        };
                        answer(reply, Ok(delivery), ran_for);
                    }
                }
                Err(Failure::Transport(TransportError::ResponseTooLarge { size, limit })) => {
                    // The oversized response was read and discarded: the worker is fine.
                    self.finish_call();
                    let too_large = GatewayError::PayloadTooLarge {
                        direction: Direction::Response,
                        size,
                        limit,
                    };
                    answer(reply, Err(too_large), started.elapsed());
                }
                Err(failure) => {
                    let ran_for = started.elapsed();
                    let cause = match failure {
                        Failure::Exited(exit) => {
                            exit.map_or_else(|err| err.to_string(), describe_exit)
                        }
                        Failure::Transport(err) => match process.wait_for(EXIT_AFTER_BREAK).await {
                            Some(status) => describe_exit(status),
                            None => err.to_string(),
                        },
                    };
                    // The whole group: nothing the function started outlives it.
                    process.kill();
                    process.settle_stderr().await;
                    warn!(
                        worker = self.index,
                        pid, cause, "worker died during a call; restarting it"
                    );
                    let crashed = GatewayError::WorkerCrashed {
                        worker: self.index,
                        pid,
                        cause,
                    };
                    answer(reply, Err(crashed), ran_for);
                    return Ended::Died;
                }
            }
        }
    }

    /// Runs `call` on the worker and returns its response. A call that
    /// streams its items sends each chunk to `items` as it comes, asking
    /// the worker for the next one only once the chunk is taken (so a slow
    /// caller pauses the function), and for none once `items` is closed.
    async fn converse(
        &self,
        channel: &mut Channel<'_>,
        call: &WorkerCall,
        items: Option<mpsc::Sender<Delivery>>,
        share: Option<&Share>,
        known: &mut KnownFunctions,
    ) -> Result<Bytes, TransportError> {
        let Some(items) = items else {
            return self.exchange(channel, call, known, false).await;
        };
        let mut response = self.exchange(channel, call, known, true).await?;
        while items::is_chunk(&response) {
            let sent = tokio::select! {
                undelivered = self.undelivered(response.len(), share) => {
                    let chunk = Delivery { payload: response, undelivered };
                    items.send(chunk).await.is_ok()
                }
                () = items.closed() => false,
            };
            let request = if sent {
                Bytes::from_static(items::NEXT)
            } else {
                // The caller has gone: close the iterator (its `finally` runs).
                Bytes::from_static(items::CLOSE)
            };
            self.metrics.moved(Direction::Request, request.len());
            response = channel.transport.call(request).await?;
        }
        Ok(response)
    }

    /// Sends `call`, by digest if the process holds its function, attached
    /// if not or if it answers that it does not (a miss): then once more,
    /// attached. `streamed`: as a call that streams its items.
    async fn exchange(
        &self,
        channel: &mut Channel<'_>,
        call: &WorkerCall,
        known: &mut KnownFunctions,
        streamed: bool,
    ) -> Result<Bytes, TransportError> {
        let mut attached = !known.knows(call.digest());
        loop {
            let request = if attached {
                call.attached()
            } else {
                call.by_digest()
            };
            let request = if streamed {
                items::streamed(&request)
            } else {
                request
            };
            self.metrics.moved(Direction::Request, request.len());
            let argument = call
                .segments()
                .and_then(|segments| segments.argument.as_ref());
            if let Some((handle, segment)) = argument {
                channel.segments.send(*handle, segment).await?;
            }
            let response = channel.transport.call(request).await?;
            // Known from now on only if the worker says it kept it (it
            // keeps none over its own bounds); by digest, it had it.
            let (kept, response) = functions::strip_kept(response);
            if kept {
                known.learned(*call.digest());
            }
            if segments::wire::is_segment_response(&response) {
                return self.result_segment(channel.segments, call, &response).await;
            }
            if !functions::is_miss(&response) {
                return Ok(response);
            }
            if attached {
                return Err(TransportError::UnexpectedMiss);
            }
            attached = true;
        }
    }

    /// Takes the segment of an `MCR2` response and holds it for the caller;
    /// the response with the handle the caller takes it by.
    async fn result_segment(
        &self,
        segments: &WorkerSegments,
        call: &WorkerCall,
        response: &[u8],
    ) -> Result<Bytes, TransportError> {
        let limit = self.transport.max_payload_bytes();
        let result = match segments.receive(limit).await {
            Ok(result) => result,
            Err(ChannelError::Refused(SegmentError::TooLarge { size, limit })) => {
                return Err(TransportError::ResponseTooLarge { size, limit });
            }
            Err(err) => return Err(err.into()),
        };
        let Some(caller) = call.segments() else {
            return Err(TransportError::UnexpectedSegment);
        };
        // Held for the caller until it takes it, as a result not yet
        // delivered; a caller that has gone gets nothing, and it goes at once.
        let undelivered = self.results.take(result.charge()).await;
        let handle = caller.session.offer(result, undelivered).unwrap_or(0);
        Ok(segments::wire::with_handle(response, handle))
    }

    /// Takes `len` bytes of the results budget (waiting for room) and
    /// counts them in the caller's `share`.
    async fn undelivered(&self, len: usize, share: Option<&Share>) -> Undelivered {
        let total = self.results.take(len).await;
        Undelivered::new(total, share.map(|share| share.count(len)))
    }

    fn set_state(&self, state: WorkerState) {
        self.board.update(self.index, |slot| slot.state = state);
    }

    /// The call is answered and the worker is free again.
    fn finish_call(&self) {
        self.board.update(self.index, |slot| {
            slot.calls_served += 1;
            slot.state = WorkerState::Idle;
        });
    }
}

/// A worker's two channels: its transport, and its segment channel.
struct Channel<'a> {
    transport: &'a mut Transport,
    segments: &'a WorkerSegments,
}
