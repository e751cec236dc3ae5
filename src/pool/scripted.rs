//! A scripted stand-in for a worker process, for the worker actor's unit
//! tests: it speaks the real pipe protocol (`ready`, then one base64 line per
//! request and per response) over its link, a real socket pair, keeps the functions it
//! was sent by digest as a real worker does (saying so with its answer, and
//! answering a miss for one it lacks), streams the items of a call sent to stream them (as many chunks
//! as its arguments say, each on request, until its end or a close), and
//! does what its [`Script`] says: serve, forget its functions,
//! crash mid-call, die while idle, hang, or fail to start. Its exit status is what a real process's would be, and a kill ends
//! it at once.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::spawn::{Spawner, WorkerProcess};
use super::startup::StartError;
use crate::wire::answers::{KEPT_MAGIC, miss};
use crate::wire::{Request, items};

/// What one scripted worker does.
#[derive(Debug, Clone)]
pub enum Script {
    /// Says `ready`, then answers every call after `delay` with `echo:` and
    /// the call's arguments.
    Serve { delay: Duration },
    /// Serves, but forgets every function once its call is answered.
    Forgetful,
    /// Serves, but keeps no function it is sent (as a real worker does with
    /// one over its bounds), and says so by not saying it kept it.
    KeepsNone,
    /// Answers every call with a miss, even one that brought its function.
    AlwaysMisses,
    /// Says `ready`, then dies with `status` when the first call arrives.
    CrashOnCall(ExitStatus),
    /// As `CrashOnCall`, but its link stays open, as when children the
    /// function forked inherited them.
    CrashHoldingLink(ExitStatus),
    /// Says `ready`, then dies with `status` after `after`, without a call.
    DieIdle { after: Duration, status: ExitStatus },
    /// Says `ready`, then reads calls and never answers.
    Hang,
    /// Dies with `status` before saying `ready`.
    FailStart(ExitStatus),
}

/// An exit with `code`.
pub fn exit_code(code: i32) -> ExitStatus {
    ExitStatus::from_raw(code << 8)
}

/// Death by `signal`.
pub fn signalled(signal: i32) -> ExitStatus {
    ExitStatus::from_raw(signal)
}

/// What the scripted workers did, for tests to check.
#[derive(Debug, Default, Clone)]
pub struct Log {
    /// When each worker was spawned.
    pub spawns: Vec<Instant>,
    /// The arguments of every call a worker ran, in order.
    pub requests: Vec<Vec<u8>>,
    /// Whether each request a worker read had its function attached.
    pub attached: Vec<bool>,
    /// How many times a worker's process group was killed.
    pub kills: usize,
    /// How many chunks of items the workers sent, and how many streamed
    /// calls they were asked to close before their end.
    pub chunks: usize,
    pub closes: usize,
}

/// Hands out scripted workers: the scripts in order, then workers that serve.
#[derive(Debug, Default)]
pub struct ScriptedSpawner {
    scripts: Mutex<VecDeque<Script>>,
    log: Arc<Mutex<Log>>,
}

impl ScriptedSpawner {
    pub fn new(scripts: impl IntoIterator<Item = Script>) -> Self {
        ScriptedSpawner {
            scripts: Mutex::new(scripts.into_iter().collect()),
            log: Arc::default(),
        }
    }

    /// A handle on the log that stays valid once the spawner is moved.
    pub fn log(&self) -> Arc<Mutex<Log>> {
        Arc::clone(&self.log)
    }
}

impl Spawner for ScriptedSpawner {
    type Process = ScriptedProcess;

    async fn spawn(
        &self,
        _index: usize,
        transport_args: &[String],
        link: OwnedFd,
    ) -> Result<Self::Process, StartError> {
        assert_eq!(transport_args[..2], ["--transport", "pipe"]);
        let script = self
            .scripts
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Script::Serve {
                delay: Duration::ZERO,
            });
        let pid = {
            let mut log = self.log.lock().unwrap();
            log.spawns.push(Instant::now());
            1000 + log.spawns.len() as u32
        };
        let link = std::os::unix::net::UnixStream::from(link);
        link.set_nonblocking(true).expect("a socket");
        let (requests, responses) = UnixStream::from_std(link).expect("a socket").into_split();
        let exit = Arc::new(watch::Sender::new(None));
        let worker = tokio::spawn(run(
            script,
            requests,
            responses,
            Arc::clone(&exit),
            Arc::clone(&self.log),
        ));
        Ok(ScriptedProcess {
            pid,
            exit,
            worker: worker.abort_handle(),
            log: Arc::clone(&self.log),
        })
    }

    fn program(&self) -> String {
        "scripted-python".into()
    }
}

/// One scripted worker, as the actor sees it.
#[derive(Debug)]
pub struct ScriptedProcess {
    pid: u32,
    exit: Arc<watch::Sender<Option<ExitStatus>>>,
    worker: AbortHandle,
    log: Arc<Mutex<Log>>,
}

impl WorkerProcess for ScriptedProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    async fn wait(&mut self) -> io::Result<ExitStatus> {
        let mut exit = self.exit.subscribe();
        let status = exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| io::Error::other("the scripted worker vanished"))?;
        Ok(status.expect("waited for Some"))
    }

    /// Like a kill of the process group: the worker and whatever holds its
    /// link end now.
    fn kill(&self) {
        self.exit.send_if_modified(|status| {
            let alive = status.is_none();
            if alive {
                *status = Some(signalled(9));
            }
            alive
        });
        self.log.lock().unwrap().kills += 1;
        self.worker.abort();
    }

    async fn stop(mut self) -> Option<ExitStatus> {
        // Like a real worker, it exits on EOF; one that does not is killed.
        if let Some(status) = self.wait_for(Duration::from_secs(2)).await {
            return Some(status);
        }
        self.kill();
        *self.exit.borrow()
    }

    fn stderr_tail(&self) -> Vec<String> {
        Vec::new()
    }

    async fn settle_stderr(&mut self) {}
}

/// The scripted worker's body.
async fn run(
    script: Script,
    incoming: OwnedReadHalf,
    mut outgoing: OwnedWriteHalf,
    exit: Arc<watch::Sender<Option<ExitStatus>>>,
    log: Arc<Mutex<Log>>,
) {
    let die = |status| {
        exit.send_if_modified(|current| current.replace(status).is_none());
    };
    if let Script::FailStart(status) = script {
        die(status);
        return;
    }
    if outgoing.write_all(b"ready\n").await.is_err() {
        return;
    }
    if let Script::DieIdle { after, status } = script {
        tokio::time::sleep(after).await;
        die(status);
        return;
    }
    let mut requests = BufReader::new(incoming);
    let mut line = String::new();
    let mut functions = HashSet::new();
    // A call streaming its items: its arguments, and the chunks still to send.
    let mut streaming: Option<(Vec<u8>, usize)> = None;
    loop {
        line.clear();
        match requests.read_line(&mut line).await {
            Ok(0) | Err(_) => {
                // EOF on the link: the gateway asks the worker to exit.
                die(exit_code(0));
                return;
            }
            Ok(_) => {}
        }
        let request = BASE64
            .decode(line.trim_end())
            .expect("the gateway sends base64 lines");
        if request == items::NEXT || request == items::CLOSE {
            let (arguments, left) = streaming.take().expect("a call streams its items");
            let response = if request == items::CLOSE {
                log.lock().unwrap().closes += 1;
                b"closed".to_vec()
            } else if left == 0 {
                [&b"echo:"[..], &arguments].concat()
            } else {
                log.lock().unwrap().chunks += 1;
                streaming = Some((arguments, left - 1));
                [&items::CHUNK_MAGIC[..], b"chunk"].concat()
            };
            if !answer(&mut outgoing, &response).await {
                return;
            }
            continue;
        }
        let (streamed, request) = match items::unstreamed(&request) {
            Some(inner) => (true, inner.to_vec()),
            None => (false, request),
        };
        let request = Request::parse(request.into()).expect("the gateway sends calls");
        log.lock().unwrap().attached.push(request.is_attached());
        let kept = request.is_attached()
            && !matches!(script, Script::AlwaysMisses | Script::KeepsNone)
            && functions.insert(*request.digest());
        if matches!(script, Script::AlwaysMisses) {
            functions.clear();
        }
        // The first answer to a call whose function it kept says so.
        let said = if kept { &KEPT_MAGIC[..] } else { &[] };
        let misses = matches!(script, Script::AlwaysMisses)
            || (!request.is_attached() && !functions.contains(request.digest()));
        if misses {
            let miss = miss(request.digest());
            if !answer(&mut outgoing, &miss).await {
                return;
            }
            continue;
        }
        log.lock()
            .unwrap()
            .requests
            .push(request.arguments().to_vec());
        if streamed {
            // As many chunks as the arguments say (a number), each on request.
            let count: usize = std::str::from_utf8(request.arguments())
                .ok()
                .and_then(|count| count.parse().ok())
                .expect("a streamed call's arguments are its number of chunks");
            log.lock().unwrap().chunks += 1;
            streaming = Some((request.arguments().to_vec(), count.saturating_sub(1)));
            let chunk = [said, &items::CHUNK_MAGIC[..], b"chunk"].concat();
            if !answer(&mut outgoing, &chunk).await {
                return;
            }
            continue;
        }
        match &script {
            Script::Serve { delay } => {
                tokio::time::sleep(*delay).await;
                let echo = [said, b"echo:", request.arguments()].concat();
                if !answer(&mut outgoing, &echo).await {
                    return;
                }
            }
            Script::KeepsNone => {
                let echo = [said, b"echo:", request.arguments()].concat();
                if !answer(&mut outgoing, &echo).await {
                    return;
                }
            }
            Script::Forgetful => {
                let echo = [said, b"echo:", request.arguments()].concat();
                if !answer(&mut outgoing, &echo).await {
                    return;
                }
                functions.clear();
            }
            Script::CrashOnCall(status) => {
                die(*status);
                return;
            }
            Script::CrashHoldingLink(status) => {
                die(*status);
                std::future::pending::<()>().await;
            }
            Script::Hang => std::future::pending::<()>().await,
            Script::DieIdle { .. } | Script::FailStart(_) | Script::AlwaysMisses => {
                unreachable!("handled above")
            }
        }
    }
}

/// Writes one response line; false once the gateway has gone.
async fn answer(outgoing: &mut OwnedWriteHalf, response: &[u8]) -> bool {
    let mut line = BASE64.encode(response);
    line.push('\n');
    outgoing.write_all(line.as_bytes()).await.is_ok()
}
