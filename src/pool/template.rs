//! The template process, `<python> -m worker_shim --template`: it imports
//! the worker and the `--preload` modules once, then forks a worker whenever
//! asked (`worker_shim/_template.py` has the other side). This module starts
//! it and speaks its control protocol: a Unix socket pair (the template's
//! stdin), one line per request or reply, fields separated by tabs, the new
//! worker's fds 0 to 2 (its link, stdout and stderr) attached to a request. Requests carry
//! an id and are answered in any order, so that forks overlap.
//!
//! The template forks each worker through a middle process that answers
//! and exits, so the worker is re-parented to the gateway, which must be a
//! child subreaper (`launcher.rs` sees to it) and then waits for it like any
//! child (`adopted.rs`).

use std::ffi::OsString;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use nix::sys::signal::Signal;

use super::process::{describe_exit, signal_group};
use super::startup::last_words;
use super::stderr::{StderrDrain, stderr_socket};

/// Longest message the template sends.
const MAX_REPLY: usize = 4096;
/// How long the template gets to exit after its control channel closes.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Why the template could not start or fork.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot run `{python}`: {source}")]
    Spawn { python: String, source: io::Error },

    #[error("cannot set up its control channel: {0}")]
    Control(#[source] io::Error),

    #[error("cannot preload `{module}`: {reason}")]
    Preload { module: String, reason: String },

    #[error("it exited ({status}){detail}")]
    Exited { status: String, detail: String },

    #[error("it did not say `ready` within {}s", .0.as_secs_f64())]
    TimedOut(Duration),

    #[error("it did not answer a fork request within {}s (--startup-timeout)", .0.as_secs_f64())]
    NoAnswer(Duration),

    #[error("cannot send it a request: {0}")]
    Send(String),

    #[error("it could not fork a worker: {0}")]
    Fork(String),

    #[error("it broke its protocol: {0:?}")]
    Protocol(String),
}

/// What the template said about one request.
#[derive(Debug)]
pub struct Reply {
    pub request: u64,
    /// The new worker's pid, or why there is none.
    pub outcome: Result<u32, TemplateError>,
}

/// What happened next to a running template.
#[derive(Debug)]
pub enum Event {
    Reply(Reply),
    /// It exited (or its channel failed: then it is on its way out).
    Exited(TemplateError),
}

/// A running template, ready to fork.
#[derive(Debug)]
pub struct Template {
    child: Child,
    pid: u32,
    control: Control,
    stderr: StderrDrain,
}

/// Our end of the control channel.
#[derive(Debug)]
struct Control {
    stream: UnixStream,
    /// Bytes read past the last whole line.
    unread: Vec<u8>,
}

impl Template {
    /// Starts the template with `args` (after `--template`) and waits up
    /// to `timeout` for it to say `ready`.
    pub async fn start(
        python: &OsString,
        args: &[String],
        timeout: Duration,
    ) -> Result<Template, TemplateError> {
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(TemplateError::Control)?;
        // Only our end: the template reads its end blocking.
        ours.set_nonblocking(true).map_err(TemplateError::Control)?;
        let stream = UnixStream::from_std(ours).map_err(TemplateError::Control)?;
        let (stderr_read, stderr_write) = stderr_socket().map_err(TemplateError::Control)?;
        let stdout = stderr_write.try_clone().map_err(TemplateError::Control)?;
        let mut command = Command::new(python);
        command.args(["-m", "worker_shim", "--template"]).args(args);
        command
            .env("MYSTIC_GATEWAY_PID", std::process::id().to_string())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr_write))
            .process_group(0)
            .kill_on_drop(true);
        let spawned = command.spawn();
        // The command holds the child's ends of the pipes until it is dropped.
        drop(command);
        let child = spawned.map_err(|source| TemplateError::Spawn {
            python: python.to_string_lossy().into_owned(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        let stderr = StderrDrain::start(stderr_read, None, pid).map_err(TemplateError::Control)?;
        let mut template = Template {
            child,
            pid,
            control: Control {
                stream,
                unread: Vec::new(),
            },
            stderr,
        };
        let greeting = tokio::select! {
            reply = tokio::time::timeout(timeout, template.control.receive()) => match reply {
                Ok(reply) => reply,
                Err(_elapsed) => return Err(TemplateError::TimedOut(timeout)),
            },
            exit = template.child.wait() => return Err(template.exited(exit).await),
        };
        match greeting {
            Ok(fields) => match fields.as_slice() {
                [ready] if ready == "ready" => Ok(template),
                [failed, module, reason] if failed == "preload-failed" => {
                    Err(TemplateError::Preload {
                        module: module.clone(),
                        reason: reason.clone(),
                    })
                }
                _ => Err(TemplateError::Protocol(fields.join(" "))),
            },
            Err(_) => {
                let exit = template.child.wait().await;
                Err(template.exited(exit).await)
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Asks for the worker of slot `index`, started with `args` and with
    /// `stdio` as its fds 0 to 2 (ours may be closed once this
    /// returns); the answer is a later [`Event::Reply`] for `request`.
    pub async fn request(
        &mut self,
        request: u64,
        index: usize,
        args: &[String],
        stdio: [BorrowedFd<'_>; 3],
    ) -> io::Result<()> {
        let mut message = format!("fork\t{request}\t{index}");
        for arg in args {
            message.push('\t');
            message.push_str(arg);
        }
        message.push('\n');
        self.control.send(message.as_bytes(), &stdio).await
    }

    /// The next reply, or the template's exit. Cancel-safe.
    pub async fn next_event(&mut self) -> Event {
        tokio::select! {
            fields = self.control.receive() => match fields {
                Ok(fields) => Event::Reply(parse_reply(&fields)),
                Err(err) => Event::Exited(self.gone(err).await),
            },
            exit = self.child.wait() => Event::Exited(self.exited(exit).await),
        }
    }

    /// After the template exited: the replies its middle processes still
    /// send, until the last of them has closed the channel.
    pub async fn late_replies(&mut self) -> Vec<Reply> {
        let mut replies = Vec::new();
        let drain = async {
            while let Ok(fields) = self.control.receive().await {
                replies.push(parse_reply(&fields));
            }
        };
        let _ = tokio::time::timeout(STOP_WAIT, drain).await;
        replies
    }

    /// Kills the template and its middle processes at once.
    pub fn kill(&mut self) {
        signal_group(self.pid, Signal::SIGKILL);
    }

    /// Closes the control channel (the template exits on EOF), then kills
    /// it if it lingers.
    pub async fn stop(self) {
        let Template {
            mut child,
            pid,
            control,
            mut stderr,
        } = self;
        drop(control);
        if tokio::time::timeout(STOP_WAIT, child.wait()).await.is_err() {
            signal_group(pid, Signal::SIGKILL);
            let _ = child.wait().await;
        }
        stderr.settle().await;
    }

    /// Why a template whose channel failed with `err` is gone.
    async fn gone(&mut self, err: io::Error) -> TemplateError {
        match tokio::time::timeout(STOP_WAIT, self.child.wait()).await {
            Ok(exit) => self.exited(exit).await,
            Err(_elapsed) => TemplateError::Control(err),
        }
    }

    async fn exited(&mut self, exit: io::Result<ExitStatus>) -> TemplateError {
        self.stderr.settle().await;
        TemplateError::Exited {
            status: exit.map_or_else(|err| err.to_string(), describe_exit),
            detail: last_words(&self.stderr.tail()),
        }
    }
}

/// `forked <request> <pid>` or `error <request> <reason>`.
fn parse_reply(fields: &[String]) -> Reply {
    let request = fields
        .get(1)
        .and_then(|id| id.parse().ok())
        .unwrap_or(u64::MAX);
    let outcome = match fields {
        [forked, _, pid] if forked == "forked" => pid
            .parse()
            .map_err(|_| TemplateError::Protocol(fields.join(" "))),
        [error, _, reason] if error == "error" => Err(TemplateError::Fork(reason.clone())),
        _ => Err(TemplateError::Protocol(fields.join(" "))),
    };
    Reply { request, outcome }
}

impl Control {
    /// Sends one message with `fds` attached.
    async fn send(&self, message: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let sent = self
            .stream
            .async_io(Interest::WRITABLE, || {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
                let mut ancillary = SendAncillaryBuffer::new(&mut space);
                if !ancillary.push(SendAncillaryMessage::ScmRights(fds)) {
                    return Err(io::Error::other("too many descriptors for one message"));
                }
                Ok(rustix::net::sendmsg(
                    &self.stream,
                    &[IoSlice::new(message)],
                    &mut ancillary,
                    SendFlags::NOSIGNAL,
                )?)
            })
            .await?;
        // One small message on an empty socket goes whole; anything else
        // means the template is not reading.
        if sent != message.len() {
            return Err(io::Error::other("the control message was cut short"));
        }
        Ok(())
    }

    /// The next line, split into its fields; EOF is an error.
    async fn receive(&mut self) -> io::Result<Vec<String>> {
        loop {
            if let Some(end) = self.unread.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = self.unread.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line[..end]);
                return Ok(text.split('\t').map(str::to_owned).collect());
            }
            if self.unread.len() > MAX_REPLY {
                return Err(io::Error::other(
                    "a reply longer than any the template sends",
                ));
            }
            let mut buffer = [0u8; 512];
            self.stream.readable().await?;
            match self.stream.try_read(&mut buffer) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(len) => self.unread.extend_from_slice(&buffer[..len]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
    }
}
