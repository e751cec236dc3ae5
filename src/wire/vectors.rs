//! Checks every record against `tests/vectors/wire_records.txt`, the file
//! the Python tests check too (through the extension), so that both
//! languages agree byte for byte: each record is built from its fields and
//! compared with the file's bytes, and read back from them.

use std::collections::HashMap;

use super::answers::{self, KEPT_MAGIC, RESPONSE_MAGIC};
use super::calls::{self, by_digest_header};
use super::items::{self, CHUNK_MAGIC, CLOSE, NEXT};
use super::records::{self, Record};
use super::segmented::{self, CallHeader, Layout, Place, Source};
use super::{Digest, Peek};

const VECTORS: &str = include_str!("../../tests/vectors/wire_records.txt");

/// One line: a family, its fields, its bytes.
struct Vector<'a> {
    family: &'a str,
    fields: HashMap<&'a str, &'a str>,
    bytes: Vec<u8>,
}

fn hex(text: &str) -> Vec<u8> {
    if text == "-" {
        return Vec::new();
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
        .collect()
}

impl<'a> Vector<'a> {
    fn parse(line: &'a str) -> Vector<'a> {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        let bytes = hex(words.pop().expect("bytes last"));
        let fields = match words[..] {
            ["malformed", of] => HashMap::from([("of", of)]),
            _ => words[1..]
                .iter()
                .map(|word| word.split_once('=').expect("name=value"))
                .collect(),
        };
        Vector {
            family: words[0],
            fields,
            bytes,
        }
    }

    fn field(&self, name: &str) -> &'a str {
        self.fields.get(name).unwrap_or_else(|| panic!("no {name}"))
    }

    fn bytes_of(&self, name: &str) -> Vec<u8> {
        hex(self.field(name))
    }

    fn int(&self, name: &str) -> u64 {
        self.field(name).parse().expect("an integer")
    }

    fn digest(&self) -> Digest {
        self.bytes_of("digest").try_into().expect("32 bytes")
    }

    /// The request: `call` with the vector's function attached, if any.
    fn request(&self, call: &[u8]) -> Vec<u8> {
        match self.fields.get("function") {
            Some(function) => calls::attach(&hex(function), call).unwrap().to_vec(),
            None => call.to_vec(),
        }
    }

    fn layout(&self) -> Layout {
        let buffers = self
            .field("buffers")
            .split(',')
            .filter(|place| *place != "-")
            .map(|place| {
                let numbers: Vec<u64> = place.split(':').map(|n| n.parse().unwrap()).collect();
                Place {
                    offset: numbers[0],
                    length: numbers[1],
                    source: Source::try_from(numbers[2]).unwrap(),
                }
            })
            .collect();
        Layout {
            pickle_bytes: self.int("pickle"),
            buffers,
        }
    }

    /// Checks the file's bytes against the encoding, and reads them back.
    fn check(&self) {
        let bytes = &self.bytes[..];
        match self.family {
            "call" => {
                let call = [
                    &by_digest_header(&self.digest())[..],
                    &self.bytes_of("arguments"),
                ]
                .concat();
                assert_eq!(self.request(&call), bytes);
                let split = calls::split(bytes).unwrap();
                assert_eq!(split.digest, self.digest());
                assert!(!split.segmented);
                let function = split.function.clone().map(|range| bytes[range].to_vec());
                assert_eq!(function, self.fields.get("function").map(|f| hex(f)));
                assert_eq!(bytes[split.arguments()..], self.bytes_of("arguments"));
            }
            "host_call" => {
                let header = CallHeader {
                    digest: self.digest(),
                    session: self.bytes_of("session").try_into().unwrap(),
                    handle: self.int("handle"),
                    result_threshold: self.int("threshold"),
                };
                let layout = self.layout();
                let inline = self.bytes_of("inline");
                let call = [&header.encode()[..], &layout.encode().unwrap(), &inline].concat();
                assert_eq!(self.request(&call), bytes);
                let split = calls::split(bytes).unwrap();
                assert_eq!((split.digest, split.segmented), (header.digest, true));
                let parsed = segmented::parse_call(&bytes[split.call..]).unwrap();
                assert_eq!((parsed.header, parsed.layout), (header, layout));
                assert_eq!(bytes[split.call..][parsed.inline], inline);
            }
            "host_response" => {
                let (handle, layout) = (self.int("handle"), self.layout());
                let response = [
                    &segmented::response_header(handle)[..],
                    &layout.encode().unwrap(),
                ]
                .concat();
                assert_eq!(response, bytes);
                assert!(segmented::is_segment_response(bytes));
                assert_eq!(segmented::parse_response(bytes), Ok((handle, layout)));
            }
            "miss" => {
                assert_eq!(answers::miss(&self.digest()), bytes);
                assert!(answers::is_miss(bytes));
            }
            "kept" => {
                assert_eq!([&KEPT_MAGIC[..], &self.bytes_of("answer")].concat(), bytes);
                assert_eq!(answers::strip_kept(bytes), (true, KEPT_MAGIC.len()));
            }
            "response" => {
                assert_eq!(
                    [&RESPONSE_MAGIC[..], &self.bytes_of("pickle")].concat(),
                    bytes
                );
            }
            "streamed" => {
                assert_eq!(items::streamed(&self.bytes_of("request")), bytes);
            }
            "chunk" => {
                assert_eq!([&CHUNK_MAGIC[..], &self.bytes_of("pickle")].concat(), bytes);
                assert!(items::is_chunk(bytes));
            }
            "next" => assert_eq!(NEXT, bytes),
            "close" => assert_eq!(CLOSE, bytes),
            "record" => {
                let record = Record {
                    kind: record_kind(self.field("kind")),
                    status: record_status(self.field("status")),
                    handle: self.int("handle"),
                    token: self.bytes_of("token").try_into().unwrap_or_default(),
                };
                assert_eq!(record.encode(), bytes);
                assert_eq!(Record::read(bytes), Ok(record));
            }
            "malformed" => assert!(refused(self.field("of"), bytes)),
            family => panic!("unknown family {family}"),
        }
    }
}

fn record_kind(name: &str) -> [u8; 4] {
    match name {
        "HELLO" => records::HELLO,
        "PUT" => records::PUT,
        "GET" => records::GET,
        "DROP" => records::DROP,
        other => hex(other).try_into().expect("four bytes"),
    }
}

fn record_status(name: &str) -> u32 {
    match name {
        "OK" => records::OK,
        "REFUSED" => records::REFUSED,
        "TOO_LARGE" => records::TOO_LARGE,
        "BUSY" => records::BUSY,
        "UNKNOWN" => records::UNKNOWN,
        "BAD_REQUEST" => records::BAD_REQUEST,
        other => panic!("unknown status {other}"),
    }
}

/// Whether `bytes` are refused as a record of `family`.
fn refused<P: Peek + ?Sized>(family: &str, bytes: &P) -> bool {
    match family {
        "request" => calls::split(bytes).is_err(),
        "host_call" => segmented::parse_call(bytes).is_err(),
        "host_response" => segmented::parse_response(bytes).is_err(),
        "record" => Record::read(bytes).is_err(),
        other => panic!("unknown family {other}"),
    }
}

#[test]
fn every_vector_matches_the_rust_encoding() {
    let mut families = HashMap::new();
    for line in VECTORS.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let vector = Vector::parse(line);
        let family = match vector.family {
            "malformed" => vector.field("of"),
            family => family,
        };
        *families.entry(family).or_insert(0) += 1;
        vector.check();
    }
    let expected = [
        "call",
        "host_call",
        "host_response",
        "miss",
        "kept",
        "response",
        "streamed",
        "chunk",
        "next",
        "close",
        "record",
        "request",
    ];
    for family in expected {
        assert!(families.contains_key(family), "no {family} vector");
    }
}
