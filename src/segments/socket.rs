//! Sending and receiving the records of the segment sockets
//! ([`crate::wire::records`]) over a Unix stream socket, each with at most
//! one descriptor attached.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
use tokio::net::UnixStream;

use crate::wire::records::{RECORD_BYTES, Record};

/// Sends `record`, with `fd` attached if given.
pub async fn send(
    stream: &UnixStream,
    record: &Record,
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let bytes = record.encode();
    let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
    let mut sent = stream
        .async_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut ancillary = SendAncillaryBuffer::new(&mut space);
            if !fds.is_empty() {
                ancillary.push(SendAncillaryMessage::ScmRights(&fds));
            }
            Ok(rustix::net::sendmsg(
                stream,
                &[IoSlice::new(&bytes)],
                &mut ancillary,
                SendFlags::NOSIGNAL,
            )?)
        })
        .await?;
    // The descriptor went with the first byte; the rest is plain bytes.
    while sent < RECORD_BYTES {
        stream.writable().await?;
        match stream.try_write(&bytes[sent..]) {
            Ok(written) => sent += written,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Waits until a record has begun to arrive (or the peer has closed),
/// reading nothing. Tokio's readiness outlives a read that did not drain
/// the socket, so it is confirmed by peeking: waiting is never mistaken
/// for a record under way.
pub async fn arriving(stream: &UnixStream) -> io::Result<()> {
    loop {
        stream.readable().await?;
        let peeked = stream.try_io(Interest::READABLE, || {
            let mut byte = [0u8; 1];
            rustix::net::recv(stream, &mut byte, RecvFlags::PEEK)?;
            Ok(())
        });
        match peeked {
            Ok(_) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
}

/// Receives one record and the descriptor that came with it, if any. EOF
/// before a whole record is `UnexpectedEof`; more than one descriptor is an
/// error (the extra ones are closed).
pub async fn receive(stream: &UnixStream) -> io::Result<(Record, Option<OwnedFd>)> {
    let mut bytes = [0u8; RECORD_BYTES];
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut filled = 0;
    while filled < RECORD_BYTES {
        let read = stream
            .async_io(Interest::READABLE, || {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
                let mut ancillary = RecvAncillaryBuffer::new(&mut space);
                let received = rustix::net::recvmsg(
                    stream,
                    &mut [IoSliceMut::new(&mut bytes[filled..])],
                    &mut ancillary,
                    RecvFlags::CMSG_CLOEXEC,
                )?;
                for message in ancillary.drain() {
                    if let RecvAncillaryMessage::ScmRights(rights) = message {
                        fds.extend(rights);
                    }
                }
                Ok(received.bytes)
            })
            .await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += read;
    }
    if fds.len() > 1 {
        return Err(io::Error::other("more than one descriptor with one record"));
    }
    Ok((Record::decode(&bytes), fds.pop()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::records::{GET, PUT};

    #[tokio::test]
    async fn a_descriptor_travels_with_its_record() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let mut record = Record::new(PUT);
        record.handle = 42;
        send(&ours, &record, Some(std::os::fd::AsFd::as_fd(&file)))
            .await
            .unwrap();
        send(&ours, &Record::new(GET), None).await.unwrap();
        let (first, fd) = receive(&theirs).await.unwrap();
        assert_eq!(first, record);
        assert!(fd.is_some());
        let (second, none) = receive(&theirs).await.unwrap();
        assert_eq!(second.kind, GET);
        assert!(none.is_none());
        drop(ours);
        let eof = receive(&theirs).await.unwrap_err();
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
    }
}
