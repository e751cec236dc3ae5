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
//!   every process tokio started leads its own, and is reaped by its
//!   owner), or that leads one and is still unreaped after a while (a
//!   process a function detached with `setsid`).

use std::collections::{HashMap, HashSet};
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
    /// Whether to look again: a SIGCHLD came (or a poll passed) since the
    /// last look. A SIGCHLD that comes while nobody waits is kept by
    /// `children` for the next wait.
    look: bool,
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
            look: true,
        })
    }

    /// Waits for the process to exit and reaps it. Cancel-safe.
    ///
    /// It looks (`waitpid`) only when a SIGCHLD came since it last looked,
    /// not at every call: the worker actor waits afresh at every call.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if std::mem::take(&mut self.look) {
                if let Some(status) = self.try_wait()? {
                    self.look = true;
                    return Ok(status);
                }
            }
            if self.adopt_by.is_some() {
                // Not ours yet: no SIGCHLD would say when it is.
                tokio::time::sleep(ADOPTION_POLL).await;
            } else if self.children.recv().await.is_none() {
                return Err(io::Error::other("SIGCHLD can no longer be received"));
            }
            self.look = true;
        }
    }

    /// Reaps the process if it has exited.
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
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

/// How long an exited child that leads its own process group may stay
/// unreaped before the [`Reaper`] takes it: its owner (tokio, for the
/// processes it started; [`Adopted`], for workers) reaps it within
/// milliseconds, so one left longer is an orphan that detached itself
/// (`setsid`) and was re-parented to the gateway.
const ORPHAN_AGE: Duration = Duration::from_secs(2);

/// Reaps what else is re-parented to the gateway (see the module docs).
#[derive(Debug, Clone)]
pub struct Reaper {
    state: Arc<Mutex<Reaping>>,
    wake: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Reaping {
    /// Killed groups of finished workers, reaped until empty.
    groups: HashSet<i32>,
    /// Exited children that lead their own group, and when first seen so.
    leaders: HashMap<i32, Instant>,
}

impl Reaper {
    /// Starts reaping on every SIGCHLD. Call from within the tokio runtime.
    pub fn start() -> io::Result<Reaper> {
        let reaper = Reaper {
            state: Arc::default(),
            wake: Arc::default(),
        };
        let mut children = signal(SignalKind::child())?;
        let task = reaper.clone();
        tokio::spawn(async move {
            let mut waiting_for_leaders = false;
            loop {
                let again = async {
                    if waiting_for_leaders {
                        tokio::time::sleep(ORPHAN_AGE).await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    signal = children.recv() => if signal.is_none() { return },
                    () = task.wake.notified() => {}
                    () = again => {}
                }
                waiting_for_leaders = task.reap();
                if Arc::strong_count(&task.state) == 1 {
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
        self.lock().groups.insert(pgid);
        self.wake.notify_one();
    }

    /// Reaps what can be reaped now; whether exited group leaders are
    /// waiting to be old enough.
    fn reap(&self) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        let mut leaders = HashMap::new();
        for (pid, pgrp) in exited_children() {
            if pgrp == pid {
                let since = state.leaders.get(&pid).copied().unwrap_or(now);
                if now - since < ORPHAN_AGE {
                    leaders.insert(pid, since);
                    continue;
                }
            }
            if let Some(pid) = Pid::from_raw(pid) {
                let _ = waitpid(Some(pid), WaitOptions::NOHANG);
            }
        }
        state.leaders = leaders;
        state.groups.retain(|&pgid| {
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
        !state.leaders.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reaping> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The gateway's children that have exited (zombies), with their process group.
fn exited_children() -> Vec<(i32, i32)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut exited = Vec::new();
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in children
            .split_whitespace()
            .filter_map(|pid| pid.parse::<i32>().ok())
        {
            if let Some(pgrp) = exited_group(pid) {
                exited.push((pid, pgrp));
            }
        }
    }
    exited
}

/// The process group of `pid` if it has exited and is not reaped yet.
fn exited_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, in parentheses: state, ppid, pgrp.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    (state == "Z").then_some(pgrp)
}
