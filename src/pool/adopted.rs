//! Children the gateway did not start itself: workers forked by the template
//! and re-parented to the gateway (a child subreaper), and whatever a dead
//! worker's process group leaves behind.
//!
//! - [`Adopted`]: one adopted worker, reaped with `waitpid` when SIGCHLD
//!   says a child changed state. Nothing else reaps it (tokio waits only for
//!   the children it started), so its pid cannot be reused under us before
//!   that, and its exit status is ours to read.
//! - [`Reaper`]: reaps what else is re-parented to the gateway (a child
//!   subreaper), so that none stays a zombie: the members of finished
//!   workers' process groups, and on every SIGCHLD any exited child that
//!   does not lead its own process group (every worker, the template and
//!   every process tokio started leads its own, and is reaped by its owner).

use std::collections::HashSet;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::process::{Pid, WaitOptions, waitpgid, waitpid};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a forked worker may take to become the gateway's child (its
/// middle process exits right after forking it).
const ADOPTION_LIMIT: Duration = Duration::from_secs(5);
/// How often to look again while it has not.
const ADOPTION_POLL: Duration = Duration::from_millis(5);

/// A worker process the gateway adopted.
#[derive(Debug)]
pub struct Adopted {
    pid: Pid,
    /// Created before the first look, so that no SIGCHLD is missed.
    children: Signal,
    status: Option<ExitStatus>,
    /// Until the worker is known to be our child: when to give up.
    adopt_by: Option<Instant>,
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
            adopt_by: Some(Instant::now() + ADOPTION_LIMIT),
        })
    }

    /// Waits for the process to exit and reaps it. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if self.adopt_by.is_some() {
                // Not ours yet: no SIGCHLD would say when it is.
                tokio::time::sleep(ADOPTION_POLL).await;
            } else if self.children.recv().await.is_none() {
                return Err(io::Error::other("SIGCHLD can no longer be received"));
            }
        }
    }

    /// Reaps the process if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            match waitpid(Some(self.pid), WaitOptions::NOHANG) {
                Ok(reaped) => {
                    self.adopt_by = None;
                    self.status = reaped.map(|(_, status)| ExitStatus::from_raw(status.as_raw()));
                }
                // Not re-parented to us yet: the template's middle process is
                // still exiting.
                Err(rustix::io::Errno::CHILD)
                    if self.adopt_by.is_some_and(|limit| Instant::now() < limit) => {}
                Err(rustix::io::Errno::CHILD) => {
                    return Err(io::Error::other(format!(
                        "worker {} did not become the gateway's child",
                        self.pid.as_raw_nonzero()
                    )));
                }
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
        reap_orphans();
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

/// Reaps every exited child of the gateway that does not lead its own
/// process group: what a worker or the template left behind when it died.
fn reap_orphans() {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in children
            .split_whitespace()
            .filter_map(|pid| pid.parse::<i32>().ok())
        {
            if is_orphan_zombie(pid) {
                if let Some(pid) = Pid::from_raw(pid) {
                    let _ = waitpid(Some(pid), WaitOptions::NOHANG);
                }
            }
        }
    }
}

/// Whether `pid` has exited and is in a process group it does not lead.
fn is_orphan_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // After the command name, in parentheses: state, ppid, pgrp.
    let mut fields = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace();
    let state = fields.next();
    let pgrp = fields.nth(1).and_then(|pgrp| pgrp.parse::<i32>().ok());
    state == Some("Z") && pgrp.is_some_and(|pgrp| pgrp != pid)
}
