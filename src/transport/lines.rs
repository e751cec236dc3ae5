//! Lines read from a stream, for both ends of the pipe transport (the
//! gateway's, on tokio, and the worker's, blocking, in the extension): where
//! the next whole line lies, room for the next read without zeroing memory
//! again, and the memory a large line made it grow to given back.

use std::ops::Range;

/// Bytes read from the link at once, at least.
const READ_BYTES: usize = 64 << 10;

/// The buffer is kept between lines up to this size; one that grew past it
/// for a large line is given back.
const KEEP_BYTES: usize = 4 << 20;

/// Bytes read and not yet taken as lines.
#[derive(Debug, Default)]
pub struct LineBuffer {
    /// Its length is its capacity; `buffer[start..end]` is not yet taken.
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    /// `buffer[start..searched]` holds no `\n`.
    searched: usize,
}

impl LineBuffer {
    pub fn new() -> LineBuffer {
        LineBuffer::default()
    }

    /// Takes the next whole line, if it has come: where it lies (without
    /// its `\n`), for [`bytes`](Self::bytes) until the next read.
    pub fn take_line(&mut self) -> Option<Range<usize>> {
        let at = self.buffer[self.searched..self.end]
            .iter()
            .position(|&byte| byte == b'\n');
        match at {
            Some(at) => {
                let line = self.start..self.searched + at;
                self.start = line.end + 1;
                self.searched = self.start;
                Some(line)
            }
            None => {
                self.searched = self.end;
                None
            }
        }
    }

    /// The bytes of a line [`take_line`](Self::take_line) found.
    pub fn bytes(&self, line: Range<usize>) -> &[u8] {
        &self.buffer[line]
    }

    /// Bytes of a line that has not yet come whole.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// Forgets the bytes of the line that has not yet come whole (it is
    /// over a limit; the rest of it is skipped as it comes).
    pub fn skip_pending(&mut self) {
        self.start = self.end;
        self.searched = self.end;
    }

    /// Room for the next read: at least [`READ_BYTES`], after what is not
    /// yet taken (moved to the front first). Lines found before are no
    /// longer valid.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.searched = 0;
            if self.buffer.len() > KEEP_BYTES {
                self.buffer = Vec::new();
            }
        } else if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.searched -= self.start;
            self.start = 0;
        }
        if self.buffer.len() - self.end < READ_BYTES {
            let len = (self.end + READ_BYTES).max(self.buffer.len() * 2);
            self.buffer.resize(len, 0);
        }
        &mut self.buffer[self.end..]
    }

    /// Says that a read put `read` bytes in the [`spare`](Self::spare) room.
    pub fn filled(&mut self, read: usize) {
        self.end += read;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lines: &mut LineBuffer, bytes: &[u8]) {
        for chunk in bytes.chunks(READ_BYTES) {
            lines.spare()[..chunk.len()].copy_from_slice(chunk);
            lines.filled(chunk.len());
        }
    }

    #[test]
    fn lines_come_whole_across_reads_and_the_rest_waits() {
        let mut lines = LineBuffer::new();
        feed(&mut lines, b"one\ntw");
        let line = lines.take_line().unwrap();
        assert_eq!(lines.bytes(line), b"one");
        assert_eq!(lines.take_line(), None);
        assert_eq!(lines.pending(), 2);
        feed(&mut lines, b"o\n\nthree");
        let line = lines.take_line().unwrap();
        assert_eq!(lines.bytes(line), b"two");
        let line = lines.take_line().unwrap();
        assert_eq!(lines.bytes(line), b"");
        assert_eq!(lines.take_line(), None);
        assert_eq!(lines.pending(), 5);
    }

    #[test]
    fn a_skipped_line_is_forgotten_and_a_large_buffer_given_back() {
        let mut lines = LineBuffer::new();
        let large = vec![b'x'; KEEP_BYTES + 1];
        feed(&mut lines, &large);
        assert_eq!(lines.take_line(), None);
        lines.skip_pending();
        feed(&mut lines, b"tail\nnext\n");
        let line = lines.take_line().unwrap();
        assert_eq!(lines.bytes(line), b"tail");
        let line = lines.take_line().unwrap();
        assert_eq!(lines.bytes(line), b"next");
        lines.spare();
        assert!(lines.buffer.len() <= 2 * READ_BYTES);
    }
}
