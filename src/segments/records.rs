//! The messages of the segment sockets (`mystic_wire/_records.py` has the
//! other side): 32 bytes each (a kind, a status, a handle, a token, little
//! endian), at most one descriptor attached, over a Unix stream socket.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
use tokio::net::UnixStream;

pub const RECORD_BYTES: usize = 32;
pub const TOKEN_BYTES: usize = 16;

/// The gateway greets a caller with its session's token.
pub const HELLO: [u8; 4] = *b"HELO";
/// A caller hands in a segment (attached); the reply holds its handle.
pub const PUT: [u8; 4] = *b"PUT ";
/// A caller takes a result segment by handle; the reply has it attached.
pub const GET: [u8; 4] = *b"GET ";
/// A caller lets go of a segment it handed in (no reply).
pub const DROP: [u8; 4] = *b"DROP";
/// Gateway to worker: the segment of the call that follows.
pub const CALL: [u8; 4] = *b"CALL";
/// Worker to gateway: the segment of the response that follows.
pub const RESULT: [u8; 4] = *b"RSLT";

/// A reply's status: done.
pub const OK: u32 = 0;

/// One message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub kind: [u8; 4],
    pub status: u32,
    pub handle: u64,
    pub token: [u8; TOKEN_BYTES],
}

impl Record {
    pub fn new(kind: [u8; 4]) -> Record {
        Record {
            kind,
            status: OK,
            handle: 0,
            token: [0; TOKEN_BYTES],
        }
    }

    pub fn encode(&self) -> [u8; RECORD_BYTES] {
        let mut bytes = [0; RECORD_BYTES];
        bytes[..4].copy_from_slice(&self.kind);
        bytes[4..8].copy_from_slice(&self.status.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.handle.to_le_bytes());
        bytes[16..].copy_from_slice(&self.token);
        bytes
    }

    pub fn decode(bytes: &[u8; RECORD_BYTES]) -> Record {
        let field = |range: std::ops::Range<usize>| &bytes[range];
        Record {
            kind: field(0..4).try_into().expect("4 bytes"),
            status: u32::from_le_bytes(field(4..8).try_into().expect("4 bytes")),
            handle: u64::from_le_bytes(field(8..16).try_into().expect("8 bytes")),
            token: field(16..RECORD_BYTES).try_into().expect("16 bytes"),
        }
    }
}

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

    #[test]
    fn records_round_trip() {
        let record = Record {
            kind: PUT,
            status: 7,
            handle: u64::MAX - 3,
            token: [9; TOKEN_BYTES],
        };
        assert_eq!(Record::decode(&record.encode()), record);
    }

    #[tokio::test]
    async fn a_descriptor_travels_with_its_record() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let mut record = Record::new(CALL);
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
