//! Workers as operating-system processes: [`PythonSpawner`] starts
//! `<python> -m worker_shim` in its own process group, [`OsProcess`] drains
//! its stderr into the log and stops it (EOF, then SIGTERM to its process
//! group, then SIGKILL).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

use super::spawn::{Spawned, Spawner, Stdin, Stdout, WorkerProcess};
use crate::transport::ChildStdio;

/// Longest stderr line logged as one line; longer ones are split.
const STDERR_LINE_LIMIT: u64 = 16 * 1024;
/// Stderr lines kept to explain a worker that fails.
const STDERR_TAIL_LINES: usize = 20;
/// How long a worker gets after stdin EOF, and again after SIGTERM.
const STOP_STEP: Duration = Duration::from_secs(2);

/// How long to wait for the last stderr lines of a worker that ended.
const STDERR_SETTLE: Duration = Duration::from_millis(300);

/// Starts workers as `<python> -m worker_shim`.
#[derive(Debug, Clone)]
pub struct PythonSpawner {
    pub python: OsString,
    /// RLIMIT_AS for the worker, which sets it on itself at start-up.
    pub memory_limit: Option<u64>,
}

/// The last lines a worker wrote to stderr.
#[derive(Debug, Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    fn push(&self, line: String) {
        let mut lines = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if lines.len() == STDERR_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines, oldest first.
    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// A running worker process.
#[derive(Debug)]
pub struct OsProcess {
    child: Child,
    pid: u32,
    stderr_tail: StderrTail,
    drain: tokio::task::JoinHandle<()>,
}

impl Spawner for PythonSpawner {
    type Process = OsProcess;

    fn spawn(
        &self,
        index: usize,
        transport_args: &[String],
        stdio: ChildStdio,
    ) -> io::Result<Spawned<OsProcess>> {
        let piped = matches!(stdio, ChildStdio::Pipes);
        let (stdin, stdout) = match stdio {
            ChildStdio::Pipes => (Stdio::piped(), Stdio::piped()),
            ChildStdio::Given { stdin, stdout } => (Stdio::from(stdin), Stdio::from(stdout)),
        };
        let mut command = Command::new(&self.python);
        command
            .args(["-m", "worker_shim"])
            .args(transport_args)
            .args(
                self.memory_limit
                    .map(|bytes| ["--memory-limit".to_owned(), bytes.to_string()])
                    .into_iter()
                    .flatten(),
            )
            .env("MYSTIC_GATEWAY_PID", std::process::id().to_string())
            .env("MYSTIC_WORKER_INDEX", index.to_string())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C reaches the gateway only,
            // which then stops the workers in order.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("worker exited at once"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("worker started without a piped stderr"))?;
        let pipes = match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => {
                Some((Box::new(stdin) as Stdin, Box::new(stdout) as Stdout))
            }
            _ if piped => return Err(io::Error::other("worker started without piped stdio")),
            _ => None,
        };
        let stderr_tail = StderrTail::default();
        let drain = tokio::spawn(drain_stderr(stderr, index, pid, stderr_tail.clone()));
        Ok(Spawned {
            process: OsProcess {
                child,
                pid,
                stderr_tail,
                drain,
            },
            pipes,
        })
    }

    fn program(&self) -> String {
        self.python.to_string_lossy().into_owned()
    }
}

impl WorkerProcess for OsProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    fn kill(&self) {
        self.signal_group(Signal::SIGKILL);
    }

    async fn stop(mut self) -> Option<ExitStatus> {
        let mut status = self.wait_for(STOP_STEP).await;
        if status.is_none() {
            self.signal_group(Signal::SIGTERM);
            status = self.wait_for(STOP_STEP).await;
        }
        if status.is_none() {
            self.signal_group(Signal::SIGKILL);
            status = self.child.wait().await.ok();
        }
        // Children of the worker may hold its stderr open: don't wait for them.
        self.signal_group(Signal::SIGKILL);
        self.settle_stderr().await;
        self.drain.abort();
        status
    }

    fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail.lines()
    }

    async fn settle_stderr(&mut self) {
        if !self.drain.is_finished() {
            let _ = tokio::time::timeout(STDERR_SETTLE, &mut self.drain).await;
        }
    }
}

impl OsProcess {
    fn signal_group(&self, signal: Signal) {
        let Ok(raw) = i32::try_from(self.pid) else {
            return;
        };
        // ESRCH: the group is already gone, which is what we want.
        let _ = killpg(Pid::from_raw(raw), signal);
    }
}

/// Words for how a process ended: `exit code 3`, `killed by signal 9 (SIGKILL)`.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(number) => {
            let name = Signal::try_from(number).map_or("unknown", Signal::as_str);
            format!("killed by signal {number} ({name})")
        }
        None => format!("{status}"),
    }
}

/// Logs every stderr line of one worker, tagged with its index and pid.
async fn drain_stderr(stderr: ChildStderr, index: usize, pid: u32, tail: StderrTail) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match (&mut reader)
            .take(STDERR_LINE_LIMIT)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                tracing::info!(target: "worker", worker = index, pid, "{text}");
                tail.push(text.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_described_in_words() {
        assert_eq!(describe_exit(ExitStatus::from_raw(3 << 8)), "exit code 3");
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(11)),
            "killed by signal 11 (SIGSEGV)"
        );
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let tail = StderrTail::default();
        for n in 0..(STDERR_TAIL_LINES + 5) {
            tail.push(format!("line {n}"));
        }
        let lines = tail.lines();
        assert_eq!(lines.len(), STDERR_TAIL_LINES);
        assert_eq!(lines.first().map(String::as_str), Some("line 5"));
        assert_eq!(lines.last().map(String::as_str), Some("line 24"));
    }

    #[tokio::test]
    async fn a_missing_interpreter_is_an_io_error() {
        let spawner = PythonSpawner {
            python: "/nonexistent/python".into(),
            memory_limit: None,
        };
        match spawner.spawn(0, &[], ChildStdio::Pipes) {
            Err(err) => assert_eq!(err.kind(), io::ErrorKind::NotFound),
            Ok(_) => panic!("a missing interpreter started"),
        }
    }
}
