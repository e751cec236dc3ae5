//! The actor that owns one worker slot and supervises its process: it
//! prepares the worker's channel, spawns the process, waits for its
//! handshake, pulls jobs from the queue one at a time and hands each to the
//! process's [`Conversation`] (`conversation.rs`: what is said about one
//! call), notices when the process dies (while idle or mid-call) or a call
//! runs past its deadline, answers the call it was running with a crash or
//! timeout error, and starts a new process with backoff; a process due for
//! recycling is replaced at once, between calls. It keeps the slot's line of
//! the status board.
//!
//! Results: each one takes its bytes of the results budget before it is
//! handed on, the worker waiting (busy) while there is no room; a call whose
//! caller holds its share of results undelivered is handed back to it, not
//! run (see `results.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::conversation::Conversation;
use super::process::describe_exit;
use super::queue::{Job, JobReceiver, JobResult, Popped, expiry};
use super::recycle::Recycle;
use super::restart::Backoff;
use super::results::Delivery;
use super::spawn::{Spawner, WorkerProcess};
use super::startup::StartError;
use super::status::{StatusBoard, WorkerState};
use crate::budget::Budget;
use crate::error::{Direction, GatewayError};
use crate::metrics::{Metrics, Outcome, Restart, Unserved};
use crate::transport::{self, TransportError};

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
                Ok((mut process, mut conversation)) => {
                    if let Some(report) = first_start.take() {
                        let _ = report.send(Ok(()));
                    }
                    let (up_since, mut served) = (Instant::now(), 0);
                    let ended = self
                        .serve(&mut process, &mut conversation, &mut served)
                        .await;
                    // A worker that took a call or ran a while was healthy: if it
                    // died, it is replaced at once. One that dies idle right
                    // after starting, again and again, is restarted ever later.
                    if served > 0 || up_since.elapsed() >= HEALTHY_RUN {
                        backoff.reset();
                    }
                    drop(conversation);
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

    /// Prepares the link, spawns a process and waits for its handshake;
    /// the process, and the conversation over its link.
    async fn start(&self) -> Result<(S::Process, Conversation), StartError> {
        let transport_failed = |source| StartError::Transport {
            index: self.index,
            source,
        };
        let mut prepared = self.transport.prepare().map_err(transport_failed)?;
        let mut process = self
            .spawner
            .spawn(self.index, &prepared.worker_args(), prepared.worker_end())
            .await?;
        let mut transport = match prepared.connect() {
            Ok(transport) => transport,
            Err(err) => {
                process.kill();
                process.stop().await;
                return Err(transport_failed(err));
            }
        };
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
                let conversation = Conversation::new(
                    transport,
                    self.transport.max_payload_bytes(),
                    Arc::clone(&self.results),
                    Arc::clone(&self.metrics),
                );
                Ok((process, conversation))
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
        conversation: &mut Conversation,
        served: &mut u64,
    ) -> Ended {
        let pid = process.pid();
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
            crate::hops::hop("picked", Some(queued_at));

            self.set_state(WorkerState::Busy);
            // `ran_for` is the call's own time, not including waiting for a
            // dead worker's exit status.
            let answer = |reply: oneshot::Sender<JobResult>, result: JobResult, ran_for| {
                self.metrics
                    .call_finished(self.index, Outcome::of(&result), ran_for);
                // A caller that left mid-call gets nothing; that is fine.
                let _ = reply.send(result);
                crate::hops::hop("replied", Some(queued_at));
            };
            let share = share.as_deref();
            let outcome = tokio::select! {
                outcome = crate::hops::within_call(queued_at, conversation.converse(&call, items, share)) => outcome.map_err(Failure::Transport),
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
                        undelivered = conversation.undelivered(payload.len(), share) => Some(undelivered),
                        () = reply.closed() => None,
                        () = self.abort.cancelled() => {
                            answer(reply, Err(GatewayError::ShuttingDown), ran_for);
                            return Ended::Shutdown;
                        }
                    };
                    // Idle before the caller hears back, so that what it asks
                    // next (GetWorkers) sees the worker free.
                    self.finish_call();
                    match undelivered {
                        Some(undelivered) => {
                            let delivery = Delivery {
                                payload,
                                undelivered,
                            };
                            answer(reply, Ok(delivery), ran_for);
                        }
                        // It ran; nobody is left to hear so.
                        None => self.metrics.call_finished(self.index, Outcome::Ok, ran_for),
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
