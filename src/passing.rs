//! Passing descriptors over Unix sockets: the one helper every socket that
//! carries descriptors goes through (a worker's link, the door's records,
//! the template's fork requests).
//!
//! Descriptors ride on the first byte of a send; they arrive close-on-exec
//! (nothing the receiver starts inherits them), and at most [`MAX_FDS`] come
//! with one receive: more is an error, and the kernel closes what did not
//! fit. Blocking and non-blocking callers use [`send`] and [`receive`]
//! directly; async callers on tokio use [`AsyncSocket`], which waits for
//! readiness and then calls the same two.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Most descriptors one send may carry, and one receive take.
pub const MAX_FDS: usize = 4;

/// Sends `bytes` on `socket`, `fds` attached to the first byte; returns how
/// many bytes went (a stream socket may take fewer than all).
pub fn send(socket: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one message",
        ));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        ancillary.push(SendAncillaryMessage::ScmRights(fds));
    }
    let sent = rustix::net::sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut ancillary,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?;
    Ok(sent)
}

/// Receives into `buf` from `socket`, appending the descriptors that came
/// (close-on-exec) to `fds`; returns how many bytes (0: the peer closed).
/// `wait`: block until something comes (a socket in blocking mode), or
/// fail with `WouldBlock`.
pub fn receive(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    wait: bool,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if !wait {
        flags |= RecvFlags::DONTWAIT;
    }
    let received =
        rustix::net::recvmsg(socket, &mut [IoSliceMut::new(buf)], &mut ancillary, flags)?;
    for message in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(io::Error::other(
            "more descriptors came with one message than a message may carry",
        ));
    }
    Ok(received.bytes)
}

/// Sends all of `bytes` on a socket that may be non-blocking, `fds` with
/// the first of them, waiting (in `poll`) while it is full.
pub fn send_all_blocking(
    socket: BorrowedFd<'_>,
    mut bytes: &[u8],
    mut fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut first = true;
    while first || !bytes.is_empty() {
        match send(socket, bytes, fds) {
            Ok(sent) => {
                bytes = &bytes[sent..];
                fds = &[];
                first = false;
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                let mut polled = [rustix::event::PollFd::new(
                    &socket,
                    rustix::event::PollFlags::OUT,
                )];
                match rustix::event::poll(&mut polled, None) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// A Unix socket (stream or seqpacket) driven by tokio. (tokio's stream
/// type carries a seqpacket socket as well: it only waits for readiness;
/// the sends and receives are this module's.)
#[derive(Debug)]
pub struct AsyncSocket {
    inner: UnixStream,
}

impl AsyncSocket {
    /// Takes over `socket`, which is set non-blocking. Call from within the
    /// tokio runtime.
    pub fn new(socket: OwnedFd) -> io::Result<AsyncSocket> {
        let socket = std::os::unix::net::UnixStream::from(socket);
        socket.set_nonblocking(true)?;
        Ok(AsyncSocket {
            inner: UnixStream::from_std(socket)?,
        })
    }

    /// Sends all of `bytes`, `fds` with the first of them.
    pub async fn send_all(&self, mut bytes: &[u8], mut fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        while !bytes.is_empty() || !fds.is_empty() {
            let sent = self
                .inner
                .async_io(Interest::WRITABLE, || send(self.inner.as_fd(), bytes, fds))
                .await?;
            bytes = &bytes[sent..];
            fds = &[];
            if sent == 0 && !bytes.is_empty() {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Receives what is there into `buf` (waiting for something), the
    /// descriptors that came appended to `fds`; 0 bytes: the peer closed.
    pub async fn receive(&self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
        self.inner
            .async_io(Interest::READABLE, || {
                receive(self.inner.as_fd(), buf, fds, false)
            })
            .await
    }

    /// Receives what is there now, without waiting: `WouldBlock` if nothing.
    pub fn try_receive(&self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
        self.inner.try_io(Interest::READABLE, || {
            receive(self.inner.as_fd(), buf, fds, false)
        })
    }

    /// Waits until the socket may be read.
    pub async fn readable(&self) -> io::Result<()> {
        self.inner.readable().await
    }
}

impl AsRawFd for AsyncSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};

    fn pair(kind: SocketType) -> (OwnedFd, OwnedFd) {
        socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None).unwrap()
    }

    #[test]
    fn descriptors_come_with_their_bytes_and_close_on_exec() {
        for kind in [SocketType::STREAM, SocketType::SEQPACKET] {
            let (ours, theirs) = pair(kind);
            let file = std::fs::File::open("/dev/null").unwrap();
            assert_eq!(send(ours.as_fd(), b"hello", &[file.as_fd()]).unwrap(), 5);
            let mut buf = [0u8; 16];
            let mut fds = Vec::new();
            let read = receive(theirs.as_fd(), &mut buf, &mut fds, true).unwrap();
            assert_eq!(&buf[..read], b"hello");
            assert_eq!(fds.len(), 1);
            let flags = rustix::io::fcntl_getfd(&fds[0]).unwrap();
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
            // Nothing more: would block; the peer gone: 0 bytes.
            let err = receive(theirs.as_fd(), &mut buf, &mut fds, false).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
            drop(ours);
            assert_eq!(
                receive(theirs.as_fd(), &mut buf, &mut fds, true).unwrap(),
                0
            );
        }
    }

    #[test]
    fn too_many_descriptors_are_refused_before_anything_goes() {
        let (ours, _theirs) = pair(SocketType::STREAM);
        let file = std::fs::File::open("/dev/null").unwrap();
        let fds = vec![file.as_fd(); MAX_FDS + 1];
        assert!(send(ours.as_fd(), b"x", &fds).is_err());
    }

    #[tokio::test]
    async fn async_sockets_send_whole_messages_and_wait_for_what_comes() {
        let (ours, theirs) = pair(SocketType::STREAM);
        let (ours, theirs) = (
            AsyncSocket::new(ours).unwrap(),
            AsyncSocket::new(theirs).unwrap(),
        );
        let file = std::fs::File::open("/dev/null").unwrap();
        let big = vec![7u8; 1 << 20];
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut fds = Vec::new();
            let mut buf = vec![0u8; 64 << 10];
            while got.len() < 1 << 20 {
                let read = theirs.receive(&mut buf, &mut fds).await.unwrap();
                got.extend_from_slice(&buf[..read]);
            }
            (got, fds.len())
        });
        ours.send_all(&big, &[file.as_fd()]).await.unwrap();
        let (got, fds) = reader.await.unwrap();
        assert_eq!((got.len(), fds), (1 << 20, 1));
        assert!(got.iter().all(|&byte| byte == 7));
    }
}
