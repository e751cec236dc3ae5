//! Children the gateway did not start itself: workers forked by the template
//! and re-parented to the gateway (a child subreaper), and whatever a dead
//! worker's process group leaves behind.
//!
//! - [`Adopted`]: one adopted worker, reaped with `waitpid` when SIGCHLD
//!   says a child changed state. Nothing else reaps it (tokio waits only for
//!   the children it started), so its pid cannot be reused under us before
//!   that, and its exit status is ours to read.
//! - [`Reaper`]: reaps the members of finished workers' process groups that
//!   were re-parented to the gateway, so that none stays a zombie.

use std::collections::HashSet;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

use rustix::process::{Pid, WaitOptions, waitpgid, waitpid};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Notify;

/// A worker process the gateway adopted.
#[derive(Debug)]
pub struct Adopted {
    pid: Pid,
    /// Created before the first look, so that no SIGCHLD is missed.
    children: Signal,
    status: Option<ExitStatus>,
}

impl Adopted {
    /// Watches `pid`, which must be a child of the gateway (or about to be
    /// re-parented to it) that nobody else reaps. Call from within the
    /// tokio runtime.
    pub fn new(pid: u32) -> io::Result<Adopted> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::other(format!("{pid} is not a process id")))?;
        Ok(Adopted {
            pid,
            children: signal(SignalKind::child())?,
            status: None,
        })
    }

    /// Waits for the process to exit and reaps it. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if self.children.recv().await.is_none() {
                return Err(io::Error::other("SIGCHLD can no longer be received"));
            }
        }
    }

    /// Reaps the process if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            match waitpid(Some(self.pid), WaitOptions::NOHANG) {
                Ok(reaped) => {
                    self.status = reaped.map(|(_, status)| ExitStatus::from_raw(status.as_raw()));
                }
                // Not re-parented to us yet: the template's middle process is
                // still exiting. A SIGCHLD follows once it is ours and has
                // exited (the kernel tells a new parent of a zombie child).
                Err(rustix::io::Errno::CHILD) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(self.status)
    }

    /// Whether the process has been reaped.
    pub fn reaped(&self) -> bool {
        self.status.is_some()
    }
}

/// Reaps what finished workers' process groups leave behind.
#[derive(Debug, Clone)]
pub struct Reaper {
    groups: Arc<Mutex<HashSet<i32>>>,
    wake: Arc<Notify>,
}

impl Reaper {
    /// Starts reaping on every SIGCHLD. Call from within the tokio runtime.
    pub fn start() -> io::Result<Reaper> {
        let reaper = Reaper {
            groups: Arc::default(),
            wake: Arc::default(),
        };
        let mut children = signal(SignalKind::child())?;
        let task = reaper.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    signal = children.recv() => if signal.is_none() { return },
                    () = task.wake.notified() => {}
                }
                task.reap();
                if Arc::strong_count(&task.groups) == 1 {
                    return; // the pool is gone
                }
            }
        });
        Ok(reaper)
    }

    /// The process group `pgid` (a worker's, whose leader is dead and
    /// reaped, and which was killed) is to be reaped until it is empty.
    pub fn reap_group(&self, pgid: u32) {
        let Ok(pgid) = i32::try_from(pgid) else {
            return;
        };
        self.lock().insert(pgid);
        self.wake.notify_one();
    }

    fn reap(&self) {
        self.lock().retain(|&pgid| {
            let Some(group) = Pid::from_raw(pgid) else {
                return false;
            };
            loop {
                match waitpgid(group, WaitOptions::NOHANG) {
                    Ok(Some(_)) => continue,
                    // Members alive, none exited yet: try again on the next SIGCHLD.
                    Ok(None) => return true,
                    // ECHILD: no child of ours is left in the group.
                    Err(_) => return false,
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
