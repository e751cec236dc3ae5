//! Waking the other side of a worker's link: an eventfd per side, rung
//! only when that side has said it is about to sleep.
//!
//! A side that finds nothing to do in its ring first says it is going to
//! sleep (its [`SleepFlag`]), looks once more, and only then sleeps on its
//! eventfd; a side that publishes bytes or frees space rings its peer's
//! eventfd only if the peer said so ([`wake`]). A busy pair therefore
//! exchanges frames without a system call, and no wake-up is lost: either
//! the sleeper's last look sees what was published, or the publisher sees
//! the flag (the flag's SYNC POINTs, `ring.rs`). A side may wake for
//! nothing (a ring meant for an earlier sleep); it just looks again.
//!
//! eventfds rather than the link's socket: on this kind of machine a
//! socket pair's wake-up costs 30 times an eventfd's when both sides are
//! busy (BENCHMARKS.md, "Doorbells"), and the socket's sends wake the peer
//! synchronously, holding it back until the ringer sleeps.
//!
//! The worker's side waits blocking (the extension, the GIL released),
//! without spinning first; the gateway's side waits on tokio ([`AsyncBell`]). A worker also wakes when its link's
//! socket closes (the gateway has gone), which it watches beside its bell.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{EventfdFlags, PollFd, PollFlags, eventfd};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::ring::SleepFlag;

/// The two bells of one worker's link, as the gateway makes them.
#[derive(Debug)]
pub struct Bells {
    /// Rung by the worker; the gateway sleeps on it.
    pub gateway: OwnedFd,
    /// Rung by the gateway; the worker sleeps on it.
    pub worker: OwnedFd,
}

impl Bells {
    pub fn new() -> io::Result<Bells> {
        let make = || eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK);
        Ok(Bells {
            gateway: make()?,
            worker: make()?,
        })
    }
}

/// Rings `bell` if its side said it is about to sleep (`flag`).
pub fn wake(flag: &SleepFlag, bell: BorrowedFd<'_>) -> io::Result<()> {
    if flag.take() {
        ring(bell)?;
    }
    Ok(())
}

fn ring(bell: BorrowedFd<'_>) -> io::Result<()> {
    match rustix::io::write(bell, &1u64.to_ne_bytes()) {
        // The counter is full of rings already: the peer will wake.
        Err(rustix::io::Errno::AGAIN) => Ok(()),
        Err(err) => Err(err.into()),
        Ok(_) => Ok(()),
    }
}

/// Resets `bell`'s count (the rings it has had); whether there were any.
fn drain(bell: BorrowedFd<'_>) -> io::Result<bool> {
    let mut count = [0u8; 8];
    match rustix::io::read(bell, &mut count) {
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::AGAIN) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// The gateway's bell, waited on through tokio.
#[derive(Debug)]
pub struct AsyncBell {
    fd: AsyncFd<OwnedFd>,
}

impl AsyncBell {
    /// Takes over `bell` (a non-blocking eventfd). Call from within the
    /// tokio runtime.
    pub fn new(bell: OwnedFd) -> io::Result<AsyncBell> {
        // SAFETY: `register` asks that the descriptor stay open while it is
        // registered: the `AsyncFd` owns it (an `OwnedFd`), and deregisters
        // it before closing it when dropped.
        let fd = unsafe { AsyncFd::register_with_interest(bell, Interest::READABLE) }
            .map_err(|err| err.into_parts().1)?;
        Ok(AsyncBell { fd })
    }

    /// Waits until `ready` holds, sleeping on the bell once this side has
    /// said so (`mine`) and looked once more.
    pub async fn wait_until<E: From<io::Error>>(
        &self,
        mine: &SleepFlag,
        mut ready: impl FnMut() -> Result<bool, E>,
    ) -> Result<(), E> {
        loop {
            if ready()? {
                return Ok(());
            }
            mine.raise();
            if ready()? {
                mine.lower();
                return Ok(());
            }
            let mut guard = self.fd.readable().await?;
            // A read takes the whole count, so the bell is quiet after it
            // either way: clearing tokio's readiness now spares the next
            // wait a read that would find nothing (a ring after this read
            // is a new event, which tokio keeps).
            drain(self.fd.get_ref().as_fd())?;
            guard.clear_ready();
        }
    }
}

impl AsFd for AsyncBell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

/// The worker's bell, waited on blocking.
#[derive(Debug)]
pub struct Bell {
    fd: OwnedFd,
}

/// Why a blocking wait ended without what it waited for.
#[derive(Debug, thiserror::Error)]
pub enum WaitError<E> {
    /// The link's socket closed: the gateway has gone.
    #[error("the gateway closed the link")]
    Gone,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Ready(E),
}

impl Bell {
    pub fn new(bell: OwnedFd) -> Bell {
        Bell { fd: bell }
    }

    /// Waits until `ready` holds: says it sleeps (`mine`), looks once more
    /// and sleeps on the bell, or until `link` (the link's socket) closes.
    ///
    /// It does not spin first: spinning wins only where the peer has a core
    /// of its own, and a pool of workers on a few cores (the usual case)
    /// lost 20% of its `map` rate to it (BENCHMARKS.md).
    pub fn wait_until<E>(
        &mut self,
        mine: &SleepFlag,
        link: BorrowedFd<'_>,
        mut ready: impl FnMut() -> Result<bool, E>,
    ) -> Result<(), WaitError<E>> {
        loop {
            if ready().map_err(WaitError::Ready)? {
                return Ok(());
            }
            mine.raise();
            if ready().map_err(WaitError::Ready)? {
                mine.lower();
                return Ok(());
            }
            let mut fds = [
                PollFd::new(&self.fd, PollFlags::IN),
                PollFd::new(&link, PollFlags::RDHUP),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(err) => return Err(WaitError::Io(err.into())),
            }
            let closed = fds[1]
                .revents()
                .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR);
            if closed {
                return Err(WaitError::Gone);
            }
            drain(self.fd.as_fd())?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::mapping::HeapMapping;
    use super::*;

    fn flags() -> (SleepFlag, SleepFlag) {
        let mapping: Arc<dyn super::super::mapping::Mapping> = HeapMapping::new(64);
        (
            SleepFlag::new(Arc::clone(&mapping), 0).unwrap(),
            SleepFlag::new(mapping, 4).unwrap(),
        )
    }

    #[test]
    fn a_side_is_rung_only_after_it_said_it_sleeps() {
        let bells = Bells::new().unwrap();
        let (worker_flag, _) = flags();
        wake(&worker_flag, bells.worker.as_fd()).unwrap();
        assert!(!drain(bells.worker.as_fd()).unwrap(), "rang an awake side");
        worker_flag.raise();
        wake(&worker_flag, bells.worker.as_fd()).unwrap();
        assert!(drain(bells.worker.as_fd()).unwrap());
        // Once rung, the flag is down: a second wake rings nothing.
        wake(&worker_flag, bells.worker.as_fd()).unwrap();
        assert!(!drain(bells.worker.as_fd()).unwrap());
    }

    #[test]
    fn a_blocking_wait_ends_when_the_link_closes() {
        let bells = Bells::new().unwrap();
        let (mine, _) = flags();
        let (link, peer) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(peer);
        let mut bell = Bell::new(bells.worker);
        let outcome = bell.wait_until(&mine, link.as_fd(), || Ok::<_, ()>(false));
        assert!(matches!(outcome, Err(WaitError::Gone)));
    }

    #[tokio::test]
    async fn a_sleeping_side_wakes_when_rung_and_finds_what_was_published() {
        let bells = Bells::new().unwrap();
        let (gateway_flag, _) = flags();
        let gateway_flag = Arc::new(gateway_flag);
        let published = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let bell = AsyncBell::new(bells.gateway.try_clone().unwrap()).unwrap();
        let waiting = {
            let (flag, published) = (Arc::clone(&gateway_flag), Arc::clone(&published));
            tokio::spawn(async move {
                bell.wait_until(&flag, || {
                    Ok::<_, io::Error>(published.load(std::sync::atomic::Ordering::SeqCst))
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        published.store(true, std::sync::atomic::Ordering::SeqCst);
        wake(&gateway_flag, bells.gateway.as_fd()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap()
            .unwrap();
    }
}
