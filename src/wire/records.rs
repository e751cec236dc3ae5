//! The records of the door callers hand segments through: 32 bytes each,
//! with at most one descriptor attached.
//!
//! ```text
//! 0   kind (4 bytes: HELO, PUT , GET , DROP)
//! 4   status (u32): a reply's; 0 done
//! 8   handle (u64): a segment's, in the caller's session
//! 16  token (16 bytes): the session's, in the gateway's greeting
//! ```

use super::{Peek, WireError};

pub const RECORD_BYTES: usize = 32;
pub const TOKEN_BYTES: usize = 16;

/// A session's token, which its `MCQ3` calls name.
pub type Token = [u8; TOKEN_BYTES];

/// The gateway greets a caller with its session's token.
pub const HELLO: [u8; 4] = *b"HELO";
/// A caller hands in a segment (attached); the reply holds its handle.
pub const PUT: [u8; 4] = *b"PUT ";
/// A caller takes a result segment by handle; the reply has it attached.
pub const GET: [u8; 4] = *b"GET ";
/// A caller lets go of a segment it handed in (no reply).
pub const DROP: [u8; 4] = *b"DROP";

/// A reply's status: done.
pub const OK: u32 = 0;
/// The segment was refused (not a sealed memfd, empty).
pub const REFUSED: u32 = 1;
/// The segment is over `--max-payload-bytes`.
pub const TOO_LARGE: u32 = 2;
/// The gateway is receiving too many bytes already.
pub const BUSY: u32 = 3;
/// No such handle in this session.
pub const UNKNOWN: u32 = 4;
/// A message the door does not take.
pub const BAD_REQUEST: u32 = 5;

/// One record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub kind: [u8; 4],
    pub status: u32,
    pub handle: u64,
    pub token: Token,
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

    /// Reads a record from its 32 bytes.
    pub fn decode(bytes: &[u8; RECORD_BYTES]) -> Record {
        let mut record = Record::new([0; 4]);
        let mut status = [0; 4];
        let mut handle = [0; 8];
        record.kind.copy_from_slice(&bytes[..4]);
        status.copy_from_slice(&bytes[4..8]);
        handle.copy_from_slice(&bytes[8..16]);
        record.token.copy_from_slice(&bytes[16..]);
        record.status = u32::from_le_bytes(status);
        record.handle = u64::from_le_bytes(handle);
        record
    }

    /// As [`Record::decode`], from bytes that must be 32.
    pub fn read<P: Peek + ?Sized>(bytes: &P) -> Result<Record, WireError> {
        bytes
            .peek(0)
            .filter(|_| bytes.len() == RECORD_BYTES)
            .map(|bytes| Record::decode(&bytes))
            .ok_or(WireError::RecordLength(bytes.len()))
    }
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
        assert_eq!(Record::read(&record.encode()[..]), Ok(record));
        assert_eq!(
            Record::read(&record.encode()[1..]),
            Err(WireError::RecordLength(31))
        );
    }
}
