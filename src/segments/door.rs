//! The door: the Unix socket callers on this host hand segments through.
//!
//! It is an abstract socket (no file: nothing is left behind, whoever is
//! killed) with a random name, announced in `GetWorkers`; a caller reaching
//! it is on this host, and only a caller running as the gateway's user is
//! let in (anyone else is closed on at once and sends its calls inline).
//! Each connection is a [`Session`], greeted with its token (random, 16
//! bytes), which the caller's `MCQ3` calls name:
//!
//! - `PUT` + a segment: checked ([`Sealed`]), held, answered with its
//!   handle; the call that names it takes it ([`Session::claim`]).
//! - `GET` + handle: a result segment the session holds, handed over.
//! - `DROP` + handle: a segment no call will take after all.
//!
//! Bounds: the door holds at most [`DESCRIPTORS`] descriptors for its
//! callers, a session's socket and each segment handed in taking one until
//! it is closed (a caller past it is closed on and sends inline; a segment
//! past it is refused as busy); at most [`MAX_HELD`] segments are held per
//! session before its `PUT`s are refused as busy; a record begun must
//! arrive whole within [`RECORD_TIMEOUT`] or its session is closed. A
//! segment handed in counts against the bytes being received
//! (`--max-receiving-bytes`) until a call takes it, at least a page each
//! ([`Sealed::charge`]); result segments waiting for their caller take a
//! descriptor too (they are never refused: their calls ran) and count as
//! results not yet delivered. Everything a session holds is dropped with
//! its connection, and after [`HELD_FOR`] if nobody takes it.

use std::collections::HashMap;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::sealed::{Sealed, SegmentError};
use super::socket;
use crate::budget::{Budget, Held as Counted};
use crate::wire::records::{
    self, BAD_REQUEST, BUSY, REFUSED, Record, TOKEN_BYTES, TOO_LARGE, Token, UNKNOWN,
};

/// How long a segment nobody takes is held.
pub const HELD_FOR: Duration = Duration::from_secs(60);
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Descriptors the door holds for its callers at once, at most: sessions'
/// sockets and the segments they handed in (until their calls are over).
pub const DESCRIPTORS: usize = 256;
/// Segments one session may hold at once before its `PUT`s are refused.
pub const MAX_HELD: usize = 64;
/// How long the rest of a record may take once its first byte has come.
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket and the live sessions.
#[derive(Debug)]
pub struct Door {
    name: String,
    sessions: Mutex<HashMap<Token, Weak<Session>>>,
    limit: usize,
    budget: Arc<Budget>,
    /// The descriptors held for callers (see the module doc).
    descriptors: Arc<Budget>,
    random: SystemRandom,
}

impl Door {
    /// Binds a new door; segments over `limit` bytes are refused, held ones
    /// count against `budget`, and at most `descriptors` are held for
    /// callers. Call from within the tokio runtime.
    pub fn bind(
        limit: usize,
        budget: Arc<Budget>,
        descriptors: usize,
    ) -> io::Result<(Arc<Door>, UnixListener)> {
        let random = SystemRandom::new();
        let mut nonce = [0u8; TOKEN_BYTES];
        random
            .fill(&mut nonce)
            .map_err(|_| io::Error::other("no randomness"))?;
        let name = format!("mysticchallenge-{}-{}", std::process::id(), hex(&nonce));
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let listener = std::os::unix::net::UnixListener::bind_addr(&address)?;
        listener.set_nonblocking(true)?;
        let door = Door {
            name,
            sessions: Mutex::default(),
            limit,
            budget,
            descriptors: Budget::new(descriptors),
            random,
        };
        Ok((Arc::new(door), UnixListener::from_std(listener)?))
    }

    /// The abstract socket's name (without its leading NUL).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The live session with `token`.
    pub fn session(&self, token: &Token) -> Option<Arc<Session>> {
        let sessions = self.sessions.lock().expect("sessions lock");
        sessions.get(token).and_then(Weak::upgrade)
    }

    /// Takes callers until `stop` is cancelled; sessions already open go on
    /// (calls still running deliver their results through them) until
    /// their callers close them or the gateway exits.
    pub async fn serve(self: Arc<Self>, listener: UnixListener, stop: CancellationToken) {
        let own_uid = rustix::process::geteuid().as_raw();
        // Whether accepting fails now (logged when it starts and ends).
        let mut failing = false;
        loop {
            let stream = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _address)) => stream,
                    Err(err) => {
                        if !std::mem::replace(&mut failing, true) {
                            warn!(cause = %err, "the segment socket fails to accept; retrying (logged once)");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            if std::mem::replace(&mut failing, false) {
                info!("the segment socket accepts again");
            }
            let Ok(slot) = self.descriptors.hold(1) else {
                debug!(
                    max = self.descriptors.limit(),
                    "the segment socket holds as many descriptors as it takes; a caller was closed on and sends inline"
                );
                continue;
            };
            match stream.peer_cred() {
                Ok(peer) if peer.uid() == own_uid => {}
                Ok(peer) => {
                    debug!(
                        uid = peer.uid(),
                        "a caller of another user reached the segment socket; closed"
                    );
                    continue;
                }
                Err(err) => {
                    debug!(cause = %err, "no credentials for a segment caller; closed");
                    continue;
                }
            }
            let door = Arc::clone(&self);
            tokio::spawn(door.converse(stream, slot));
        }
    }

    /// Serves one caller's session until it closes (`_slot`: its socket's
    /// place among the descriptors held for callers).
    async fn converse(self: Arc<Self>, stream: UnixStream, _slot: Counted) {
        let mut token = [0u8; TOKEN_BYTES];
        if self.random.fill(&mut token).is_err() {
            return;
        }
        let session = Arc::new(Session {
            held: Mutex::new(Held::default()),
            descriptors: Arc::clone(&self.descriptors),
            gone: tokio::sync::Notify::new(),
        });
        self.sessions
            .lock()
            .expect("sessions lock")
            .insert(token, Arc::downgrade(&session));
        let mut hello = Record::new(records::HELLO);
        hello.token = token;
        if socket::send(&stream, &hello, None).await.is_ok() {
            let mut sweep = tokio::time::interval(SWEEP_EVERY);
            loop {
                // Waiting for a record to begin, not for a whole one, is what
                // the sweep may interrupt: a record is never read halfway
                // and dropped.
                tokio::select! {
                    _ = sweep.tick() => {
                        session.sweep(Instant::now());
                        continue;
                    }
                    arriving = socket::arriving(&stream) => if arriving.is_err() { break },
                }
                // A record cut short must not hold the session (and its
                // sweep) for ever.
                let received = tokio::time::timeout(RECORD_TIMEOUT, socket::receive(&stream)).await;
                let Ok(Ok((record, fd))) = received else {
                    break;
                };
                let reply = self.answer(&session, record, fd);
                if let Some((reply, segment)) = reply {
                    let fd = segment.as_ref().map(Sealed::fd);
                    if socket::send(&stream, &reply, fd).await.is_err() {
                        break;
                    }
                }
            }
        }
        self.sessions.lock().expect("sessions lock").remove(&token);
        session.close();
    }

    /// The reply to one message (none to `DROP`).
    fn answer(
        &self,
        session: &Session,
        record: Record,
        fd: Option<std::os::fd::OwnedFd>,
    ) -> Option<(Record, Option<Sealed>)> {
        let mut reply = Record::new(record.kind);
        match (record.kind, fd) {
            (records::PUT, Some(fd)) => match self.hold(session, fd) {
                Ok(handle) => reply.handle = handle,
                Err(status) => reply.status = status,
            },
            (records::GET, None) => match session.take(record.handle, Kind::Result) {
                Some(segment) => return Some((reply, Some(segment))),
                None => reply.status = UNKNOWN,
            },
            (records::DROP, None) => {
                session.take(record.handle, Kind::Argument);
                return None;
            }
            _ => reply.status = BAD_REQUEST,
        }
        Some((reply, None))
    }

    fn hold(&self, session: &Session, fd: std::os::fd::OwnedFd) -> Result<u64, u32> {
        let segment = Sealed::check(fd, self.limit).map_err(|err| match err {
            SegmentError::TooLarge { .. } => TOO_LARGE,
            _ => REFUSED,
        })?;
        if session.holds() >= MAX_HELD {
            return Err(BUSY);
        }
        let slot = self.descriptors.hold(1).map_err(|_full| BUSY)?;
        let segment = segment.with_slot(slot);
        let counted = self.budget.hold(segment.charge()).map_err(|_full| BUSY)?;
        let entry = Entry {
            segment,
            kind: Kind::Argument,
            since: Instant::now(),
            _counted: Box::new(counted),
        };
        session.put(entry).ok_or(BUSY)
    }
}

/// One caller's segments.
#[derive(Debug)]
pub struct Session {
    held: Mutex<Held>,
    /// The door's descriptors held for callers.
    descriptors: Arc<Budget>,
    /// Told when the caller goes.
    gone: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Held {
    next: u64,
    closed: bool,
    entries: HashMap<u64, Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Handed in by the caller, for a call to take.
    Argument,
    /// A call's result, for the caller to take.
    Result,
}

#[derive(Debug)]
struct Entry {
    segment: Sealed,
    kind: Kind,
    since: Instant,
    /// What it holds of budgets until it goes.
    _counted: Box<dyn std::fmt::Debug + Send + Sync>,
}

impl Session {
    /// Takes the argument segment `handle`, for the call that names it.
    pub fn claim(&self, handle: u64) -> Option<Sealed> {
        self.take(handle, Kind::Argument)
    }

    /// Holds a call's result for the caller (`counted`: what it holds of
    /// the results not yet delivered, until taken); its handle, or None if
    /// the caller has gone.
    pub fn offer(
        &self,
        segment: Sealed,
        counted: impl std::fmt::Debug + Send + Sync + 'static,
    ) -> Option<u64> {
        self.put(Entry {
            segment: segment.with_slot(self.descriptors.count(1)),
            kind: Kind::Result,
            since: Instant::now(),
            _counted: Box::new(counted),
        })
    }

    /// Resolves once the caller has gone.
    pub async fn closed(&self) {
        loop {
            let notified = self.gone.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.held.lock().expect("session lock").closed {
                return;
            }
            notified.await;
        }
    }

    fn put(&self, entry: Entry) -> Option<u64> {
        let mut held = self.held.lock().expect("session lock");
        if held.closed {
            return None;
        }
        held.next += 1;
        let handle = held.next;
        held.entries.insert(handle, entry);
        Some(handle)
    }

    /// How many segments it holds.
    fn holds(&self) -> usize {
        self.held.lock().expect("session lock").entries.len()
    }

    fn take(&self, handle: u64, kind: Kind) -> Option<Sealed> {
        let mut held = self.held.lock().expect("session lock");
        if held.entries.get(&handle)?.kind != kind {
            return None;
        }
        held.entries.remove(&handle).map(|entry| entry.segment)
    }

    /// Drops what has been held for longer than [`HELD_FOR`].
    fn sweep(&self, now: Instant) {
        let mut held = self.held.lock().expect("session lock");
        held.entries
            .retain(|_, entry| now.duration_since(entry.since) < HELD_FOR);
    }

    /// The caller has gone: drops everything, and takes no more.
    fn close(&self) {
        let mut held = self.held.lock().expect("session lock");
        held.closed = true;
        held.entries.clear();
        self.gone.notify_waiters();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segments::sealed::tests::memfd;
    use rustix::fs::SealFlags;
    use std::os::fd::AsFd;

    const ALL_SEALS: SealFlags = SealFlags::SEAL
        .union(SealFlags::SHRINK)
        .union(SealFlags::GROW)
        .union(SealFlags::WRITE);

    async fn open(limit: usize, budget: usize) -> (Arc<Door>, Arc<Budget>, CancellationToken) {
        open_holding(limit, budget, DESCRIPTORS).await
    }

    /// A door that holds at most `descriptors` for its callers.
    async fn open_holding(
        limit: usize,
        budget: usize,
        descriptors: usize,
    ) -> (Arc<Door>, Arc<Budget>, CancellationToken) {
        let budget = Budget::new(budget);
        let (door, listener) = Door::bind(limit, Arc::clone(&budget), descriptors).unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(Arc::clone(&door).serve(listener, stop.clone()));
        (door, budget, stop)
    }

    async fn connect(door: &Door) -> (UnixStream, Token) {
        let address = std::os::unix::net::SocketAddr::from_abstract_name(door.name()).unwrap();
        let stream = std::os::unix::net::UnixStream::connect_addr(&address).unwrap();
        stream.set_nonblocking(true).unwrap();
        let stream = UnixStream::from_std(stream).unwrap();
        let (hello, fd) = socket::receive(&stream).await.unwrap();
        assert_eq!((hello.kind, fd.is_none()), (records::HELLO, true));
        (stream, hello.token)
    }

    async fn put(stream: &UnixStream, fd: &std::os::fd::OwnedFd) -> Record {
        socket::send(stream, &Record::new(records::PUT), Some(fd.as_fd()))
            .await
            .unwrap();
        socket::receive(stream).await.unwrap().0
    }

    #[tokio::test]
    async fn a_segment_handed_in_is_taken_once_by_the_call_that_names_it() {
        let (door, budget, _stop) = open(1 << 20, 4096).await;
        let (stream, token) = connect(&door).await;
        let reply = put(&stream, &memfd(4096, ALL_SEALS)).await;
        assert_eq!(reply.status, records::OK);
        let session = door.session(&token).expect("a live session");
        assert!(door.session(&[0; TOKEN_BYTES]).is_none());
        // Held, it counts against the bytes being received.
        assert!(budget.try_take(0, 1).is_err());
        let segment = session.claim(reply.handle).expect("held");
        assert_eq!(segment.len(), 4096);
        assert!(session.claim(reply.handle).is_none());
        budget.try_take(0, 1).unwrap();
    }

    #[tokio::test]
    async fn unsealed_oversized_or_unknown_segments_are_refused() {
        let (door, _budget, _stop) = open(8192, 1 << 20).await;
        let (stream, _token) = connect(&door).await;
        let unsealed = memfd(4096, SealFlags::SHRINK | SealFlags::GROW);
        assert_eq!(put(&stream, &unsealed).await.status, REFUSED);
        assert_eq!(
            put(&stream, &memfd(1 << 20, ALL_SEALS)).await.status,
            TOO_LARGE
        );
        let mut get = Record::new(records::GET);
        get.handle = 99;
        socket::send(&stream, &get, None).await.unwrap();
        assert_eq!(socket::receive(&stream).await.unwrap().0.status, UNKNOWN);
        socket::send(&stream, &Record::new(records::PUT), None)
            .await
            .unwrap();
        assert_eq!(
            socket::receive(&stream).await.unwrap().0.status,
            BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn tiny_segments_cost_a_page_each_and_a_session_holds_a_bounded_number() {
        let (door, _budget, _stop) = open(1 << 20, 2 * 4096).await;
        let (stream, _token) = connect(&door).await;
        for _ in 0..2 {
            assert_eq!(put(&stream, &memfd(1, ALL_SEALS)).await.status, records::OK);
        }
        // Two bytes held, but two pages counted: a third does not fit.
        assert_eq!(put(&stream, &memfd(1, ALL_SEALS)).await.status, BUSY);

        let (door, _budget, _stop) = open(1 << 20, usize::MAX).await;
        let (stream, _token) = connect(&door).await;
        for _ in 0..MAX_HELD {
            assert_eq!(put(&stream, &memfd(1, ALL_SEALS)).await.status, records::OK);
        }
        assert_eq!(put(&stream, &memfd(1, ALL_SEALS)).await.status, BUSY);
    }

    /// Connects to `door` as a caller past its bounds: closed on at once.
    async fn refused(door: &Door) {
        let address = std::os::unix::net::SocketAddr::from_abstract_name(door.name()).unwrap();
        let stream = std::os::unix::net::UnixStream::connect_addr(&address).unwrap();
        stream.set_nonblocking(true).unwrap();
        let stream = UnixStream::from_std(stream).unwrap();
        let refused = socket::receive(&stream).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn sessions_and_segments_share_a_bounded_number_of_descriptors() {
        let (door, _budget, _stop) = open_holding(1 << 20, 1 << 20, 3).await;
        let mut open_sessions = Vec::new();
        for _ in 0..2 {
            open_sessions.push(connect(&door).await);
        }
        // Two sessions and one segment held: the third descriptor.
        let held = put(&open_sessions[0].0, &memfd(1, ALL_SEALS)).await;
        assert_eq!(held.status, records::OK);
        assert_eq!(
            put(&open_sessions[1].0, &memfd(1, ALL_SEALS)).await.status,
            BUSY
        );
        refused(&door).await;
        // The segment taken by its call holds its descriptor until the
        // call is over.
        let segment = door
            .session(&open_sessions[0].1)
            .unwrap()
            .claim(held.handle);
        refused(&door).await;
        drop(segment);
        // One closes: a new caller gets in.
        let (first, token) = open_sessions.remove(0);
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), async {
            while door.session(&token).is_some() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        connect(&door).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_cut_short_closes_its_session() {
        use tokio::io::AsyncWriteExt as _;

        let (door, _budget, _stop) = open(1 << 20, 1 << 20).await;
        let (mut stream, token) = connect(&door).await;
        stream
            .write_all(&Record::new(records::GET).encode()[..10])
            .await
            .unwrap();
        let mut rest = [0u8; 1];
        let read = tokio::io::AsyncReadExt::read(&mut stream, &mut rest);
        let closed = tokio::time::timeout(RECORD_TIMEOUT * 2, read).await;
        assert_eq!(closed.expect("closed within the timeout").unwrap(), 0);
        assert!(door.session(&token).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_idle_between_records_stays_open() {
        let (door, _budget, _stop) = open(1 << 20, 1 << 20).await;
        let (stream, token) = connect(&door).await;
        // A whole record answered, then nothing for longer than a record
        // may take: a caller waiting for its call to run.
        assert_eq!(
            put(&stream, &memfd(4096, ALL_SEALS)).await.status,
            records::OK
        );
        tokio::time::sleep(RECORD_TIMEOUT * 3).await;
        assert!(door.session(&token).is_some());
        assert_eq!(
            put(&stream, &memfd(4096, ALL_SEALS)).await.status,
            records::OK
        );
    }

    #[tokio::test]
    async fn results_are_handed_to_their_session_and_all_goes_when_it_closes() {
        let (door, budget, _stop) = open(1 << 20, 8192).await;
        let (stream, token) = connect(&door).await;
        let session = door.session(&token).unwrap();
        let results = Budget::new(1 << 20);
        let counted = results.hold(4096).unwrap();
        let handle = session
            .offer(crate::segments::sealed::tests::sealed(4096), counted)
            .unwrap();
        // Held for its caller, it counts as a result not yet delivered ...
        assert_eq!(results.used(), 4096);
        let mut get = Record::new(records::GET);
        get.handle = handle;
        socket::send(&stream, &get, None).await.unwrap();
        let (reply, fd) = socket::receive(&stream).await.unwrap();
        assert_eq!((reply.status, fd.is_some()), (records::OK, true));
        // ... until it is taken.
        assert_eq!(results.used(), 0);
        // A result is not an argument: no call can take it, nor a second GET.
        assert!(session.claim(handle).is_none());
        let held = put(&stream, &memfd(8192, ALL_SEALS)).await;
        assert_eq!(held.status, records::OK);
        // A second one does not fit beside it.
        assert_eq!(put(&stream, &memfd(4096, ALL_SEALS)).await.status, BUSY);
        drop(stream);
        tokio::time::timeout(Duration::from_secs(5), async {
            while door.session(&token).is_some() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        drop(session);
        // What it held went with it.
        budget.try_take(0, 8192).unwrap();
        budget.give_back(8192);
        assert!(budget.try_take(0, 1).is_ok());
    }
}
