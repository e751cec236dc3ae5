//! Starting worker processes: forked by the template when it runs, as their
//! own interpreters otherwise.
//!
//! [`Launcher`] is the pool's [`Spawner`]. The gateway becomes a child
//! subreaper (so that forked workers become its children), and one task
//! ([`supervise`]) owns the template: it starts it, passes fork requests on
//! (several may be in flight), hands each slot its answer, and starts a new
//! template when it dies or stops answering (running workers are not its
//! children and are unaffected). If the
//! template cannot start, every worker is started directly from then on, and
//! the log says so once. A `--preload` module that fails to import in the
//! template is every worker's start-up error, which stops the gateway.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::adopted::Reaper;
use super::process::{OsProcess, WorkerStdio, signal_group, spawn_direct};
use super::restart::Backoff;
use super::spawn::Spawner;
use super::startup::StartError;
use super::template::{Event, Reply, Template, TemplateError};

/// How workers are started and with what.
#[derive(Debug, Clone)]
pub struct LaunchSettings {
    pub python: OsString,
    /// RLIMIT_AS for each worker, which sets it on itself at start-up.
    pub memory_limit: Option<u64>,
    /// What a call may print to each of stdout and stderr; the worker keeps
    /// the head and the tail of it.
    pub max_output_bytes: u64,
    /// Modules imported before a worker serves.
    pub preload: Vec<String>,
    /// Leave the template and the workers dumpable (`--debuggable`).
    pub debuggable: bool,
    /// Fork workers from a template (else start each directly).
    pub template: bool,
    pub startup_timeout: Duration,
}

impl LaunchSettings {
    /// The template's arguments after `--template`.
    fn template_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if !self.preload.is_empty() {
            args.extend(["--preload".to_owned(), self.preload.join(",")]);
        }
        if self.debuggable {
            args.push("--debuggable".to_owned());
        }
        args
    }
}

/// Starts worker processes (see the module docs).
#[derive(Debug)]
pub struct Launcher {
    settings: LaunchSettings,
    /// To the task that owns the template; `None` without one.
    forks: Option<mpsc::Sender<ForkRequest>>,
    /// Set while the gateway is a subreaper.
    reaper: Option<Reaper>,
}

/// One worker to fork.
struct ForkRequest {
    index: usize,
    args: Vec<String>,
    stdio: [OwnedFd; 3],
    reply: oneshot::Sender<Forked>,
}

enum Forked {
    /// The template forked it: this pid, soon the gateway's child.
    Pid(u32),
    /// No template: start it directly, with its stdio given back.
    Direct([OwnedFd; 3]),
    Failed(TemplateError),
}

impl Launcher {
    /// A launcher, and (with the template) the task that owns the template,
    /// to run until `abort`. Call from within the tokio runtime.
    pub fn new(
        settings: LaunchSettings,
        abort: CancellationToken,
    ) -> (Launcher, Option<impl Future<Output = ()> + Send + 'static>) {
        let direct = Launcher {
            settings: settings.clone(),
            forks: None,
            reaper: None,
        };
        if !settings.template {
            return (direct, None);
        }
        let reaper = match become_subreaper().and_then(|()| Reaper::start()) {
            Ok(reaper) => reaper,
            Err(err) => {
                warn!(cause = %err, "cannot fork workers from a template here; starting worker interpreters directly");
                return (direct, None);
            }
        };
        let (forks, requests) = mpsc::channel(64);
        let task = supervise(settings.clone(), requests, reaper.clone(), abort);
        let launcher = Launcher {
            settings,
            forks: Some(forks),
            reaper: Some(reaper),
        };
        (launcher, Some(task))
    }

    fn worker_args(&self, transport_args: &[String], direct: bool) -> Vec<String> {
        let mut args = transport_args.to_vec();
        if let Some(bytes) = self.settings.memory_limit {
            args.extend(["--memory-limit".to_owned(), bytes.to_string()]);
        }
        if self.settings.debuggable {
            args.push("--debuggable".to_owned());
        }
        args.extend([
            "--max-output-bytes".to_owned(),
            self.settings.max_output_bytes.to_string(),
        ]);
        // Forked workers have the template's.
        if direct && !self.settings.preload.is_empty() {
            args.extend(["--preload".to_owned(), self.settings.preload.join(",")]);
        }
        args
    }

    fn spawn_failed(&self, source: std::io::Error) -> StartError {
        StartError::Spawn {
            python: self.program(),
            source,
        }
    }
}

impl Spawner for Launcher {
    type Process = OsProcess;

    async fn spawn(
        &self,
        index: usize,
        transport_args: &[String],
        link: OwnedFd,
    ) -> Result<OsProcess, StartError> {
        let WorkerStdio { mut child, stderr } =
            WorkerStdio::new(link).map_err(|err| self.spawn_failed(err))?;
        if let (Some(forks), Some(reaper)) = (&self.forks, &self.reaper) {
            let (reply, forked) = oneshot::channel();
            let request = ForkRequest {
                index,
                args: self.worker_args(transport_args, false),
                stdio: child,
                reply,
            };
            if forks.send(request).await.is_err() {
                return Err(StartError::Stopping);
            }
            // A template that does not answer is replaced by `supervise`;
            // this slot tries again meanwhile.
            let forked = tokio::time::timeout(self.settings.startup_timeout, forked)
                .await
                .map_err(|_elapsed| StartError::Template {
                    index,
                    source: TemplateError::NoAnswer(self.settings.startup_timeout),
                })?;
            match forked {
                Ok(Forked::Pid(pid)) => {
                    return OsProcess::adopted(pid, stderr, index, reaper.clone())
                        .map_err(|err| self.spawn_failed(err));
                }
                Ok(Forked::Direct(given_back)) => child = given_back,
                Ok(Forked::Failed(TemplateError::Preload { module, reason })) => {
                    return Err(StartError::Preload { module, reason });
                }
                Ok(Forked::Failed(source)) => return Err(StartError::Template { index, source }),
                Err(_stopped) => return Err(StartError::Stopping),
            }
        }
        let args = self.worker_args(transport_args, true);
        spawn_direct(&self.settings.python, index, &args, child)
            .and_then(|process| OsProcess::direct(process, stderr, index, self.reaper.clone()))
            .map_err(|err| self.spawn_failed(err))
    }

    fn program(&self) -> String {
        self.settings.python.to_string_lossy().into_owned()
    }
}

/// Makes the gateway the reaper of its orphaned descendants, so that the
/// workers the template forks become its children.
fn become_subreaper() -> std::io::Result<()> {
    Ok(rustix::process::set_child_subreaper(Some(
        rustix::process::getpid(),
    ))?)
}

/// Owns the template until `abort`: starts it, forks through it, restarts it.
async fn supervise(
    settings: LaunchSettings,
    mut requests: mpsc::Receiver<ForkRequest>,
    reaper: Reaper,
    abort: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let mut first = true;
    let mut next_id: u64 = 0;
    let args = settings.template_args();
    loop {
        let started = tokio::select! {
            started = Template::start(&settings.python, &args, settings.startup_timeout) => started,
            () = abort.cancelled() => return,
        };
        let mut template = match started {
            Ok(template) => template,
            Err(TemplateError::Preload { module, reason }) if first => {
                // The gateway stops: every worker's first start fails so.
                while let Some(request) = next(&mut requests, &abort).await {
                    let failed = TemplateError::Preload {
                        module: module.clone(),
                        reason: reason.clone(),
                    };
                    let _ = request.reply.send(Forked::Failed(failed));
                }
                return;
            }
            Err(err) => {
                warn!(cause = %err, "cannot start the worker template; starting worker interpreters directly");
                while let Some(request) = next(&mut requests, &abort).await {
                    let _ = request.reply.send(Forked::Direct(request.stdio));
                }
                return;
            }
        };
        if first {
            info!(pid = template.pid(), "worker template ready");
        } else {
            info!(pid = template.pid(), "new worker template ready");
        }
        first = false;
        let mut pending: HashMap<u64, Pending> = HashMap::new();
        let ended = loop {
            let oldest = pending.values().map(|waiting| waiting.sent_at).min();
            let overdue = async {
                match oldest {
                    Some(sent_at) => {
                        tokio::time::sleep_until(sent_at + settings.startup_timeout).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = abort.cancelled() => break None,
                event = template.next_event() => match event {
                    Event::Reply(reply) => answer(&mut pending, reply, &mut backoff, &reaper),
                    Event::Exited(err) => break Some(err),
                },
                () = overdue => {
                    template.kill();
                    break Some(TemplateError::NoAnswer(settings.startup_timeout));
                }
                request = requests.recv() => {
                    let Some(request) = request else { break None };
                    next_id += 1;
                    let stdio = request.stdio.each_ref().map(AsFd::as_fd);
                    match template.request(next_id, request.index, &request.args, stdio).await {
                        // The template has its own copies now; ours go.
                        Ok(()) => {
                            let sent_at = tokio::time::Instant::now();
                            pending.insert(next_id, Pending { reply: request.reply, sent_at });
                        }
                        // Half a request may be on the channel: it is useless now.
                        Err(err) => {
                            let _ = request.reply.send(Forked::Failed(TemplateError::Send(
                                err.to_string(),
                            )));
                            template.kill();
                            break Some(TemplateError::Send(err.to_string()));
                        }
                    }
                }
            }
        };
        let Some(err) = ended else {
            template.stop().await;
            return;
        };
        warn!(pid = template.pid(), cause = %err, "the worker template is gone; starting a new one");
        for reply in template.late_replies().await {
            answer(&mut pending, reply, &mut backoff, &reaper);
        }
        // Its middle processes, if any were left, are ours now.
        reaper.reap_group(template.pid());
        for (_, waiting) in pending.drain() {
            let _ = waiting.reply.send(Forked::Failed(TemplateError::Fork(
                "the template exited before forking it".into(),
            )));
        }
        drop(template);
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = abort.cancelled() => return,
        }
    }
}

/// A fork request the template has not answered yet.
struct Pending {
    reply: oneshot::Sender<Forked>,
    sent_at: tokio::time::Instant,
}

/// Passes `reply` on to the slot waiting for it.
fn answer(
    pending: &mut HashMap<u64, Pending>,
    reply: Reply,
    backoff: &mut Backoff,
    reaper: &Reaper,
) {
    let Some(waiting) = pending.remove(&reply.request) else {
        warn!(
            request = reply.request,
            "the worker template answered a request it was not sent"
        );
        return;
    };
    let forked = match reply.outcome {
        Ok(pid) => {
            backoff.reset();
            Forked::Pid(pid)
        }
        Err(err) => Forked::Failed(err),
    };
    if let Err(Forked::Pid(pid)) = waiting.reply.send(forked) {
        // Its slot stopped waiting (it gave up, or the pool is stopping):
        // nobody will use this worker.
        signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        reaper.reap_group(pid);
    }
}

/// The next request, unless the pool stops first.
async fn next(
    requests: &mut mpsc::Receiver<ForkRequest>,
    abort: &CancellationToken,
) -> Option<ForkRequest> {
    tokio::select! {
        request = requests.recv() => request,
        () = abort.cancelled() => None,
    }
}
