//! A process's stderr in the gateway's log: [`StderrDrain`] reads a worker's
//! (or the template's) stderr line by line in its own task and logs each
//! line tagged with the slot and pid, at most as many as its
//! [`LogThrottle`] allows, saying how many it dropped; it keeps the last
//! lines ([`StderrTail`]), every one of them, logged or not, to explain a
//! process that fails.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::time::Instant;

use super::throttle::{BURST, Dropped, LogThrottle, PER_SECOND};

/// Longest stderr line logged as one line; longer ones are split.
const STDERR_LINE_LIMIT: u64 = 16 * 1024;
/// Stderr lines kept to explain a worker that fails.
const STDERR_TAIL_LINES: usize = 20;
/// How long to wait for the last stderr lines of a worker that ended.
const STDERR_SETTLE: Duration = Duration::from_millis(300);

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

/// A process's stderr, logged line by line as it comes, the last lines kept.
#[derive(Debug)]
pub struct StderrDrain {
    tail: StderrTail,
    task: tokio::task::JoinHandle<()>,
}

impl StderrDrain {
    /// Logs what `stderr` carries, tagged with worker slot `index` (`None`:
    /// the template) and `pid`.
    pub fn start(stderr: OwnedFd, index: Option<usize>, pid: u32) -> io::Result<StderrDrain> {
        let stderr = std::os::unix::net::UnixStream::from(stderr);
        stderr.set_nonblocking(true)?;
        let stderr = tokio::net::UnixStream::from_std(stderr)?;
        let tail = StderrTail::default();
        let task = tokio::spawn(drain(stderr, Source { index, pid }, tail.clone()));
        Ok(StderrDrain { tail, task })
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.lines()
    }

    /// Gives the drain a moment to log what an ended process wrote last.
    pub async fn settle(&mut self) {
        if !self.task.is_finished() {
            let _ = tokio::time::timeout(STDERR_SETTLE, &mut self.task).await;
        }
    }
}

impl Drop for StderrDrain {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A socket pair for a child's stderr (and stdout): our end, which only
/// reads, and the child's, which only writes (both close-on-exec; the
/// spawner places the child's). A socket rather than a pipe: nobody can
/// open it again through `/proc/<pid>/fd`.
pub fn stderr_socket() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, Shutdown, SocketFlags, SocketType, shutdown, socketpair};

    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    shutdown(&ours, Shutdown::Write)?;
    shutdown(&theirs, Shutdown::Read)?;
    Ok((ours, theirs))
}

/// Whose stderr a drain reads: worker slot `index`, or the template (`None`).
#[derive(Debug, Clone, Copy)]
struct Source {
    index: Option<usize>,
    pid: u32,
}

impl Source {
    fn log(self, line: &str) {
        let Source { index, pid } = self;
        match index {
            Some(index) => tracing::info!(target: "worker", worker = index, pid, "{line}"),
            None => tracing::info!(target: "template", pid, "{line}"),
        }
    }

    fn log_dropped(self, dropped: Dropped) {
        let Source { index, pid } = self;
        let (lines, secs) = (dropped.lines, dropped.over.as_secs_f64());
        let limit =
            format!("a process's lines are logged {BURST} at once, then {PER_SECOND} a second");
        match index {
            Some(index) => tracing::warn!(
                target: "worker", worker = index, pid, dropped = lines,
                "dropped {lines} stderr lines of worker {index} (pid {pid}) in the last {secs:.1} s: {limit}"
            ),
            None => tracing::warn!(
                target: "template", pid, dropped = lines,
                "dropped {lines} stderr lines of the worker template (pid {pid}) in the last {secs:.1} s: {limit}"
            ),
        }
    }
}

/// Logs the stderr lines of `source` (as many as its throttle allows) and
/// keeps them all in `tail`, until EOF.
async fn drain(stderr: impl AsyncRead + Unpin, source: Source, tail: StderrTail) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::with_capacity(256);
    let mut throttle = LogThrottle::new(Instant::now());
    loop {
        line.clear();
        match read_line(&mut reader, &mut line, &mut throttle, source).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                if throttle.admit(Instant::now()) {
                    source.log(text);
                }
                tail.push(text.to_owned());
            }
        }
    }
    if let Some(dropped) = throttle.report(Instant::now(), true) {
        source.log_dropped(dropped);
    }
}

/// Reads the next line (at most [`STDERR_LINE_LIMIT`] bytes of it) into
/// `line`; meanwhile logs the count of dropped lines when it is due, so
/// that a flood followed by silence is reported too.
async fn read_line(
    reader: &mut (impl AsyncBufReadExt + Unpin),
    line: &mut Vec<u8>,
    throttle: &mut LogThrottle,
    source: Source,
) -> io::Result<usize> {
    let mut limited = reader.take(STDERR_LINE_LIMIT);
    let read = limited.read_until(b'\n', line);
    tokio::pin!(read);
    loop {
        let due = throttle.report_due();
        tokio::select! {
            read = &mut read => return read,
            () = crate::timing::sleep_until(due) => {
                if let Some(dropped) = throttle.report(Instant::now(), false) {
                    source.log_dropped(dropped);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captured_log::CapturedLog;
    use crate::pool::throttle::REPORT_EVERY;
    use tokio::io::AsyncWriteExt;

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

    #[tokio::test(start_paused = true)]
    async fn a_flood_logs_a_burst_and_a_count_and_the_tail_keeps_its_last_lines() {
        let (log, _logging) = CapturedLog::install();
        let (mut stderr, reader) = tokio::io::duplex(64 * 1024);
        let tail = StderrTail::default();
        let source = Source {
            index: Some(3),
            pid: 42,
        };
        // Time stands still: no line is refilled while the flood comes.
        let drained = tokio::spawn(drain(reader, source, tail.clone()));
        let flood = u64::from(BURST) * 10;
        for n in 0..flood {
            stderr
                .write_all(format!("line {n}\n").as_bytes())
                .await
                .unwrap();
        }
        // Then silence: the count is logged when it is due, without waiting
        // for the next line or the end.
        tokio::time::sleep(2 * REPORT_EVERY).await;
        let text = log.text();
        let logged = text.lines().filter(|line| line.contains(" line ")).count();
        assert_eq!(logged, BURST as usize, "{text}");
        let dropped = flood - u64::from(BURST);
        let report = format!("dropped {dropped} stderr lines of worker 3 (pid 42)");
        assert_eq!(text.matches(&report).count(), 1, "{text}");
        drop(stderr);
        drained.await.unwrap();
        let after = log.text();
        assert_eq!(after, text, "nothing more to say at the end");

        let lines = tail.lines();
        assert_eq!(lines.len(), STDERR_TAIL_LINES);
        assert_eq!(lines.last(), Some(&format!("line {}", flood - 1)));
        assert_eq!(
            lines.first(),
            Some(&format!("line {}", flood - STDERR_TAIL_LINES as u64))
        );
    }

    #[tokio::test]
    async fn long_lines_are_split() {
        let (mut writer, reader) = tokio::io::duplex(64 * 1024);
        let tail = StderrTail::default();
        let source = Source {
            index: None,
            pid: 1,
        };
        let drained = tokio::spawn(drain(reader, source, tail.clone()));
        let long = vec![b'x'; 40 * 1024];
        writer.write_all(&long).await.unwrap();
        writer.write_all(b"\nend\n").await.unwrap();
        drop(writer);
        drained.await.unwrap();
        let lengths: Vec<usize> = tail.lines().iter().map(String::len).collect();
        assert_eq!(lengths, [16 * 1024, 16 * 1024, 8 * 1024, 3]);
    }
}
