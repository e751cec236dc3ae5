//! What a worker answers a call with.
//!
//! ```text
//! response = "MCR1" + pickled (kind, value, stdout, stderr)
//! miss     = "MCM2" + digest    it does not hold the function the call names
//! kept     = "MCK1" + answer    it kept the function attached to the call
//! ```
//!
//! A worker asked for a digest it does not hold answers a miss, and the
//! gateway sends the call again with the function attached; one that keeps
//! an attached function marks its answer, and the gateway calls it by
//! digest from then on. A response in a segment is `MCR2` (see segmented).

use super::{DIGEST_BYTES, Digest, Peek};

/// A response: its outcome, pickled.
pub const RESPONSE_MAGIC: &[u8; 4] = b"MCR1";
/// A worker's answer to a digest it does not hold.
pub const MISS_MAGIC: &[u8; 4] = b"MCM2";
/// Before a worker's answer: it kept the function attached to the call.
pub const KEPT_MAGIC: &[u8; 4] = b"MCK1";

/// The bytes of a miss.
pub const MISS_BYTES: usize = MISS_MAGIC.len() + DIGEST_BYTES;

/// A worker's answer to a call of `digest`, a function it does not hold.
pub fn miss(digest: &Digest) -> [u8; MISS_BYTES] {
    let mut miss = [0; MISS_BYTES];
    miss[..MISS_MAGIC.len()].copy_from_slice(MISS_MAGIC);
    miss[MISS_MAGIC.len()..].copy_from_slice(digest);
    miss
}

/// Whether a worker's answer says it does not hold the call's function.
pub fn is_miss<P: Peek + ?Sized>(answer: &P) -> bool {
    answer.has_at(0, MISS_MAGIC)
}

/// Whether a worker's answer says it kept the function attached to its
/// call, and where the answer starts after that mark.
pub fn strip_kept<P: Peek + ?Sized>(answer: &P) -> (bool, usize) {
    if answer.has_at(0, KEPT_MAGIC) {
        (true, KEPT_MAGIC.len())
    } else {
        (false, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_are_recognised() {
        let miss = miss(&[3; DIGEST_BYTES]);
        assert!(is_miss(&miss[..]));
        assert_eq!(&miss[4..], &[3; DIGEST_BYTES]);
        assert!(!is_miss(&b"MCR1 response"[..]));
    }

    #[test]
    fn the_kept_mark_comes_off() {
        assert_eq!(strip_kept(&b"MCK1MCR1pickle"[..]), (true, 4));
        assert_eq!(strip_kept(&b"MCR1pickle"[..]), (false, 0));
        assert_eq!(strip_kept(&b"MCK"[..]), (false, 0));
    }
}
