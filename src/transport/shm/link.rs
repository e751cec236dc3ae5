//! What a worker's shared-memory link carries besides frames: messages on
//! its socket (a seqpacket socket pair, the worker's fd 0), each a short
//! word and the descriptors it brings.
//!
//! ```text
//! worker  -> gateway  "hello"               it is not dumpable any more: it may be sent its memory
//! gateway -> worker   "rings" + 3 fds       the rings' memfd, the gateway's bell, the worker's bell
//! worker  -> gateway  "ready"               it has mapped its rings and takes calls
//! either way          "fd" + 1 fd           a descriptor of the frame about to be published
//! ```
//!
//! A frame that brings descriptors says how many in its header (and
//! whether the first one is its payload, spilled to a segment because it
//! is at least [`SPILL_BYTES`]); the sender sends them, one "fd" message
//! each, before it publishes the frame, so the reader finds them waiting,
//! in order. The socket's end is how each side learns the other has gone.
//!
//! Blocking functions here are the worker's (the extension releases the
//! GIL around them); the gateway's side is `AsyncLink`.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use super::bells::Bells;
use crate::passing::{self, AsyncSocket};

pub const HELLO: &[u8] = b"hello";
pub const RINGS: &[u8] = b"rings";
pub const READY: &[u8] = b"ready";
pub const FD: &[u8] = b"fd";

/// Frames whose payload is at least this large travel in a segment of
/// their own, not through the ring.
pub const SPILL_BYTES: usize = 1 << 20;

/// Longest message on the socket.
const MESSAGE_BYTES: usize = 16;

/// The descriptors a frame announced, sorted out.
#[derive(Debug, Default)]
pub struct Announced {
    /// The segment its payload was spilled to.
    pub spilled: Option<OwnedFd>,
    /// The segment it brings besides (a call's arguments, a result).
    pub segment: Option<OwnedFd>,
}

impl Announced {
    /// Sorts `fds` (in the order they came) for a frame that `spilled` or
    /// not: at most one of each kind.
    pub fn sort(mut fds: Vec<OwnedFd>, spilled: bool) -> io::Result<Announced> {
        let spilled = if spilled {
            if fds.is_empty() {
                return Err(invalid("a spilled frame came without its segment"));
            }
            Some(fds.remove(0))
        } else {
            None
        };
        if fds.len() > 1 {
            return Err(invalid(
                "a frame came with more descriptors than it may bring",
            ));
        }
        Ok(Announced {
            spilled,
            segment: fds.pop(),
        })
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Sends one message, `fds` with it, blocking until it goes.
pub fn send_message(
    link: BorrowedFd<'_>,
    word: &[u8],
    fds: Option<&[BorrowedFd<'_>]>,
) -> io::Result<()> {
    passing::send_all_blocking(link, word, fds.unwrap_or_default())
}

/// Receives one message, blocking until it comes: its word, and the
/// descriptors it brought. The peer gone: `UnexpectedEof`.
pub fn receive_message(link: BorrowedFd<'_>) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut word = [0u8; MESSAGE_BYTES];
    let mut fds = Vec::new();
    loop {
        match passing::receive(link, &mut word, &mut fds, true) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => return Ok((word[..read].to_vec(), fds)),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// The worker's side of the handshake, up to its memory: says `hello`,
/// takes the rings' memfd and the bells.
pub fn worker_handshake(link: BorrowedFd<'_>) -> io::Result<(OwnedFd, Bells)> {
    send_message(link, HELLO, None)?;
    let (word, mut fds) = receive_message(link)?;
    if word != RINGS || fds.len() != 3 {
        return Err(invalid("the gateway did not send the rings and the bells"));
    }
    let worker = fds.pop().expect("three");
    let gateway = fds.pop().expect("three");
    let rings = fds.pop().expect("three");
    Ok((rings, Bells { gateway, worker }))
}

/// Sends `fds`, one message each, before the frame that announces them.
pub fn send_descriptors(link: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    for fd in fds {
        send_message(link, FD, Some(std::slice::from_ref(fd)))?;
    }
    Ok(())
}

/// Receives the `count` descriptors a frame announced, for a frame that
/// `spilled` or not.
pub fn receive_descriptors(
    link: BorrowedFd<'_>,
    count: usize,
    spilled: bool,
) -> io::Result<Announced> {
    let mut fds = Vec::with_capacity(count);
    for _ in 0..count {
        let (word, brought) = receive_message(link)?;
        fds.extend(check_fd(&word, brought)?);
    }
    Announced::sort(fds, spilled)
}

fn check_fd(word: &[u8], mut fds: Vec<OwnedFd>) -> io::Result<Option<OwnedFd>> {
    if word != FD || fds.len() != 1 {
        return Err(invalid("a descriptor a frame announced did not come"));
    }
    Ok(fds.pop())
}

/// The gateway's end of a worker's link socket.
#[derive(Debug)]
pub struct AsyncLink {
    socket: AsyncSocket,
    /// Descriptors that came ahead of the frame being read.
    pending: Vec<OwnedFd>,
}

impl AsyncLink {
    pub fn new(socket: OwnedFd) -> io::Result<AsyncLink> {
        Ok(AsyncLink {
            socket: AsyncSocket::new(socket)?,
            pending: Vec::new(),
        })
    }

    async fn receive(&self) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
        let mut word = [0u8; MESSAGE_BYTES];
        let mut fds = Vec::new();
        let read = self.socket.receive(&mut word, &mut fds).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok((word[..read].to_vec(), fds))
    }

    /// Waits for the worker's `word` (`hello`, then `ready`).
    pub async fn expect(&self, word: &[u8]) -> io::Result<()> {
        let (said, fds) = self.receive().await?;
        if said != word || !fds.is_empty() {
            return Err(invalid("the worker broke the handshake"));
        }
        Ok(())
    }

    /// Sends one message, `fds` with it (the rings and bells: [`RINGS`]).
    pub async fn send(&self, word: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        self.socket.send_all(word, fds).await
    }

    /// Sends `fds`, one message each, before the frame that announces them.
    pub async fn send_descriptors(&self, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        for fd in fds {
            self.socket.send_all(FD, std::slice::from_ref(fd)).await?;
        }
        Ok(())
    }

    /// Takes the next descriptor the worker sends ahead of its frame,
    /// keeping it for [`receive_descriptors`](Self::receive_descriptors).
    /// Awaited while waiting for a frame, so that a worker that closes its
    /// link mid-frame ends the wait (`UnexpectedEof`). Cancel-safe.
    pub async fn take_ahead(&mut self) -> io::Result<()> {
        let (word, brought) = self.receive().await?;
        self.pending.extend(check_fd(&word, brought)?);
        if self.pending.len() > passing::MAX_FDS {
            return Err(invalid(
                "the worker sent more descriptors than a frame may bring",
            ));
        }
        Ok(())
    }

    /// Receives the `count` descriptors a frame announced (those taken
    /// ahead first).
    pub async fn receive_descriptors(
        &mut self,
        count: usize,
        spilled: bool,
    ) -> io::Result<Announced> {
        let mut fds = std::mem::take(&mut self.pending);
        if fds.len() > count {
            return Err(invalid(
                "the worker sent descriptors its frame did not announce",
            ));
        }
        while fds.len() < count {
            let (word, brought) = self.receive().await?;
            fds.extend(check_fd(&word, brought)?);
        }
        Announced::sort(fds, spilled)
    }
}
