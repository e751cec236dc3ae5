//! Workers as operating-system processes: [`OsProcess`] is one, started
//! directly ([`spawn_direct`]: `<python> -m worker_shim` in its own process
//! group) or forked by the template and adopted; either way it drains its
//! stderr into the log ([`StderrDrain`]), and stops it (EOF, then SIGTERM
//! to its process group, then SIGKILL). [`WorkerStdio`] makes a worker's
//! fds 0 to 2 (its link, and its stderr twice) before it exists.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::adopted::{Adopted, Reaper};
use super::spawn::WorkerProcess;
use super::stderr::{StderrDrain, stderr_socket};

/// How long a worker gets after its link closes, and again after SIGTERM.
const STOP_STEP: Duration = Duration::from_secs(2);

/// A worker's fds 0 to 2, made before it starts.
pub struct WorkerStdio {
    /// The worker's ends, in fd order: its link (fd 0), and its stderr
    /// socket as its stdout and stderr.
    pub child: [OwnedFd; 3],
    /// The gateway's end of its stderr.
    pub stderr: OwnedFd,
}

impl WorkerStdio {
    /// `link` as fd 0; a new socket for stdout and stderr.
    pub fn new(link: OwnedFd) -> io::Result<WorkerStdio> {
        let (stderr, child_stderr) = stderr_socket()?;
        let child_stdout = child_stderr.try_clone()?;
        Ok(WorkerStdio {
            child: [link, child_stdout, child_stderr],
            stderr,
        })
    }
}

/// Starts slot `index`'s worker as `<python> -m worker_shim <args>`, in its
/// own process group, with `stdio` as its fds 0 to 2 (and nothing else).
pub fn spawn_direct(
    python: &OsString,
    index: usize,
    args: &[String],
    stdio: [OwnedFd; 3],
) -> io::Result<Child> {
    let [link, stdout, stderr] = stdio;
    let mut command = Command::new(python);
    command
        .args(["-m", "worker_shim"])
        .args(args)
        .env("MYSTIC_GATEWAY_PID", std::process::id().to_string())
        .env("MYSTIC_WORKER_INDEX", index.to_string())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::from(link))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        // Its own process group: a terminal's Ctrl-C reaches the gateway only,
        // which then stops the workers in order.
        .process_group(0)
        .kill_on_drop(true);
    command.spawn()
}

/// How the gateway waits for a worker.
#[derive(Debug)]
enum Exit {
    /// Started by the gateway.
    Child(Child),
    /// Forked by the template, re-parented to the gateway.
    Adopted(Adopted),
}

/// A running worker process.
#[derive(Debug)]
pub struct OsProcess {
    exit: Exit,
    pid: u32,
    stderr: StderrDrain,
    /// Set when the gateway is a subreaper: what the worker's group leaves
    /// behind is then the gateway's to reap.
    reaper: Option<Reaper>,
}

impl OsProcess {
    /// A worker started by [`spawn_direct`].
    pub fn direct(
        child: Child,
        stderr: OwnedFd,
        index: usize,
        reaper: Option<Reaper>,
    ) -> io::Result<OsProcess> {
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("worker exited at once"))?;
        Ok(OsProcess {
            stderr: StderrDrain::start(stderr, Some(index), pid)?,
            exit: Exit::Child(child),
            pid,
            reaper,
        })
    }

    /// A worker forked by the template as `pid`.
    pub fn adopted(
        pid: u32,
        stderr: OwnedFd,
        index: usize,
        reaper: Reaper,
    ) -> io::Result<OsProcess> {
        let stderr = StderrDrain::start(stderr, Some(index), pid)?;
        let exit = match Adopted::new(pid) {
            Ok(adopted) => Exit::Adopted(adopted),
            Err(err) => {
                // Not ours to watch: kill it rather than leave it running.
                signal_group(pid, Signal::SIGKILL);
                reaper.reap_group(pid);
                return Err(err);
            }
        };
        Ok(OsProcess {
            exit,
            pid,
            stderr,
            reaper: Some(reaper),
        })
    }

    fn signal_group(&self, signal: Signal) {
        signal_group(self.pid, signal);
    }
}

impl WorkerProcess for OsProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    async fn wait(&mut self) -> io::Result<ExitStatus> {
        match &mut self.exit {
            Exit::Child(child) => child.wait().await,
            Exit::Adopted(adopted) => adopted.wait().await,
        }
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
            status = self.wait().await.ok();
        }
        // Children of the worker may hold its stderr open: don't wait for them.
        self.signal_group(Signal::SIGKILL);
        if let Some(reaper) = &self.reaper {
            reaper.reap_group(self.pid);
        }
        self.stderr.settle().await;
        status
    }

    fn stderr_tail(&self) -> Vec<String> {
        self.stderr.tail()
    }

    async fn settle_stderr(&mut self) {
        self.stderr.settle().await;
    }
}

impl Drop for OsProcess {
    fn drop(&mut self) {
        // A child started directly is killed on drop (its pid); an adopted
        // one, and anything of either group, is killed and reaped here.
        if let Exit::Adopted(adopted) = &self.exit {
            if !adopted.reaped() {
                self.signal_group(Signal::SIGKILL);
                if let Some(reaper) = &self.reaper {
                    reaper.reap_group(self.pid);
                }
            }
        }
    }
}

/// Sends `signal` to the process group led by `pid`.
pub(super) fn signal_group(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    // ESRCH: the group is already gone, which is what we want.
    let _ = killpg(Pid::from_raw(raw), signal);
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

    #[tokio::test]
    async fn a_missing_interpreter_is_an_io_error() {
        let link = std::fs::File::open("/dev/null").unwrap().into();
        let stdio = WorkerStdio::new(link).unwrap();
        match spawn_direct(&"/nonexistent/python".into(), 0, &[], stdio.child) {
            Err(err) => assert_eq!(err.kind(), io::ErrorKind::NotFound),
            Ok(_) => panic!("a missing interpreter started"),
        }
    }
}
