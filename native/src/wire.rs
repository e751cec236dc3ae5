//! The wire format (`mysticchallenge::wire`, the gateway's own definition)
//! for Python: splitting and building records, for `mystic_wire` (which
//! keeps the pickling policy) and the worker's ring.
//!
//! Arguments are any bytes-like object; a part of one comes back as a view
//! of it (a slice of a `memoryview` over the caller's object, not a copy).
//! Fields are read a few bytes at a time ([`Peek`]): a buffer may be shared
//! memory that another process writes. A malformed record raises
//! `mystic_wire`'s `CodecError`, made in one place ([`codec_error`]).

use std::ops::Range;

use mysticchallenge::wire::segmented::{self, CallHeader, Layout, Place, Source};
use mysticchallenge::wire::{Peek, Record, WireError, answers, calls, fixed};
use pyo3::buffer::{PyBuffer, ReadOnlyCell};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView, PySlice, PyTuple};

pyo3::import_exception!(mystic_wire._exceptions, CodecError);

/// The one place a malformed record (a [`WireError`]), or an argument that
/// is no bytes at all, becomes a Python exception.
fn codec_error(err: impl std::fmt::Display) -> PyErr {
    CodecError::new_err(err.to_string())
}

/// A bytes-like argument.
enum Payload<'py> {
    /// Read in place: its bytes cannot change.
    Bytes(Bound<'py, PyBytes>),
    /// Any other buffer (a `memoryview` over a ring, a `bytearray`), C
    /// contiguous, of bytes.
    Buffer {
        object: Bound<'py, PyAny>,
        buffer: PyBuffer<u8>,
    },
}

/// Its bytes, to read fields from.
enum Bytes<'a> {
    Plain(&'a [u8]),
    Shared(&'a [ReadOnlyCell<u8>]),
}

impl Peek for Bytes<'_> {
    fn len(&self) -> usize {
        match self {
            Bytes::Plain(bytes) => bytes.len(),
            Bytes::Shared(cells) => cells.len(),
        }
    }

    fn peek<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        match self {
            Bytes::Plain(bytes) => bytes.peek(at),
            Bytes::Shared(cells) => {
                let cells = cells.get(at..at.checked_add(N)?)?;
                Some(std::array::from_fn(|i| cells[i].get()))
            }
        }
    }
}

impl<'py> Payload<'py> {
    /// `object`'s bytes; a `CodecError` naming `what` if it has none.
    fn new(object: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        if let Ok(bytes) = object.cast_exact::<PyBytes>() {
            return Ok(Payload::Bytes(bytes.clone()));
        }
        let contiguous = |object: &Bound<'py, PyAny>| {
            PyBuffer::<u8>::get(object)
                .ok()
                .filter(|buffer| buffer.as_slice(object.py()).is_some())
        };
        if let Some(buffer) = contiguous(object) {
            let object = object.clone();
            return Ok(Payload::Buffer { object, buffer });
        }
        // Any other contiguous buffer, read as bytes.
        let cast = PyMemoryView::from(object).and_then(|view| view.call_method1("cast", ("B",)));
        match cast.as_ref().ok().and_then(contiguous) {
            Some(buffer) => Ok(Payload::Buffer {
                object: cast?,
                buffer,
            }),
            None => Err(codec_error(format_args!(
                "a {what} must be bytes, not {}",
                object.get_type().name()?
            ))),
        }
    }

    fn bytes(&self) -> Bytes<'_> {
        match self {
            Payload::Bytes(bytes) => Bytes::Plain(bytes.as_bytes()),
            Payload::Buffer { object, buffer } => {
                Bytes::Shared(buffer.as_slice(object.py()).unwrap_or_default())
            }
        }
    }

    /// A `memoryview` of its bytes.
    fn view(&self) -> PyResult<Bound<'py, PyAny>> {
        let (object, bytes_1d) = match self {
            Payload::Bytes(bytes) => (bytes.as_any(), true),
            Payload::Buffer { object, buffer } => (
                object,
                buffer.dimensions() == 1 && buffer.format().to_bytes() == b"B",
            ),
        };
        if bytes_1d && object.is_exact_instance_of::<PyMemoryView>() {
            return Ok(object.clone());
        }
        let view = PyMemoryView::from(object)?.into_any();
        if bytes_1d {
            Ok(view)
        } else {
            view.call_method1("cast", ("B",))
        }
    }
}

/// The bytes of `view` in `range`, a view too.
fn slice<'py>(view: &Bound<'py, PyAny>, range: Range<usize>) -> PyResult<Bound<'py, PyAny>> {
    let index = |at: usize| isize::try_from(at).unwrap_or(isize::MAX);
    view.get_item(PySlice::new(
        view.py(),
        index(range.start),
        index(range.end),
        1,
    ))
}

/// A request's digest, its attached function's pickle (None when only the
/// digest travels), its call (an `MCQ2` call's pickle, or a whole `MCQ3`
/// call) and whether the call is an `MCQ3` one.
#[pyfunction]
pub fn split_request<'py>(data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let payload = Payload::new(data, "request payload")?;
    let bytes = payload.bytes();
    let split = calls::split(&bytes).map_err(codec_error)?;
    let call_at = if split.segmented {
        split.call
    } else {
        split.arguments()
    };
    let view = payload.view()?;
    let function = match split.function {
        Some(range) => Some(slice(&view, range)?),
        None => None,
    };
    let call = slice(&view, call_at..bytes.len())?;
    let digest = PyBytes::new(data.py(), &split.digest);
    (digest, function, call, split.segmented).into_pyobject(data.py())
}

/// The header of an `MCQ2` call of the function with `digest`.
#[pyfunction]
pub fn by_digest_header<'py>(py: Python<'py>, digest: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let digest = fixed("digest", digest).map_err(codec_error)?;
    Ok(PyBytes::new(py, &calls::by_digest_header(&digest)))
}

/// `call` with the function `pickled` attached.
#[pyfunction]
pub fn attach<'py>(
    py: Python<'py>,
    pickled: &Bound<'py, PyAny>,
    call: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let (pickled, call) = (
        Payload::new(pickled, "function")?,
        Payload::new(call, "call")?,
    );
    let (pickled_len, call_len) = (pickled.bytes().len(), call.bytes().len());
    let header = calls::attached_header(pickled_len).map_err(codec_error)?;
    let total = calls::attached_len(pickled_len, call_len);
    PyBytes::new_with(py, total, |out| {
        let (head, rest) = out.split_at_mut(header.len());
        head.copy_from_slice(&header);
        let (function, rest) = rest.split_at_mut(pickled_len);
        copy(&pickled, function)?;
        copy(&call, rest)
    })
}

/// Copies all of `payload` into `out`, its size.
fn copy(payload: &Payload<'_>, out: &mut [u8]) -> PyResult<()> {
    match payload {
        Payload::Bytes(bytes) => out.copy_from_slice(bytes.as_bytes()),
        Payload::Buffer { object, buffer } => buffer.copy_to_slice(object.py(), out)?,
    }
    Ok(())
}

/// A worker's answer to a call of `digest`, a function it does not hold.
#[pyfunction]
pub fn encode_miss<'py>(py: Python<'py>, digest: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let digest = fixed("digest", digest).map_err(codec_error)?;
    Ok(PyBytes::new(py, &answers::miss(&digest)))
}

/// Whether a worker's answer says it kept the call's attached function,
/// and the answer without that mark.
#[pyfunction]
pub fn strip_kept<'py>(response: &Bound<'py, PyAny>) -> PyResult<(bool, Bound<'py, PyAny>)> {
    let payload = Payload::new(response, "response")?;
    let (kept, start) = answers::strip_kept(&payload.bytes());
    let view = payload.view()?;
    if !kept {
        return Ok((false, view));
    }
    Ok((true, slice(&view, start..payload.bytes().len())?))
}

#[pyfunction]
pub fn call_header<'py>(
    py: Python<'py>,
    digest: &[u8],
    session: &[u8],
    handle: u64,
    result_threshold: u64,
) -> PyResult<Bound<'py, PyBytes>> {
    let header = CallHeader {
        digest: fixed("digest", digest).map_err(codec_error)?,
        session: fixed("session", session).map_err(codec_error)?,
        handle,
        result_threshold,
    };
    Ok(PyBytes::new(py, &header.encode()))
}

/// The header of an `MCR2` response naming the segment `handle` (0 from a
/// worker: the gateway writes the handle in); its body follows.
#[pyfunction]
#[pyo3(signature = (handle = 0))]
pub fn response_header(py: Python<'_>, handle: u64) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &segmented::response_header(handle))
}

/// A body: a pickle of `pickle_bytes` and its buffers, each an
/// `(offset, length, source)`.
#[pyfunction]
pub fn encode_body<'py>(
    py: Python<'py>,
    pickle_bytes: u64,
    buffers: Vec<(u64, u64, u64)>,
) -> PyResult<Bound<'py, PyBytes>> {
    let buffers = buffers
        .into_iter()
        .map(|(offset, length, source)| {
            Ok::<_, WireError>(Place {
                offset,
                length,
                source: Source::try_from(source)?,
            })
        })
        .collect::<Result<_, _>>()
        .map_err(codec_error)?;
    let layout = Layout {
        pickle_bytes,
        buffers,
    };
    Ok(PyBytes::new(py, &layout.encode().map_err(codec_error)?))
}

/// A layout's buffers, as `(offset, length, source)` tuples.
fn places<'py>(py: Python<'py>, layout: &Layout) -> PyResult<Bound<'py, PyTuple>> {
    let place = |place: &Place| (place.offset, place.length, place.source as u64);
    PyTuple::new(py, layout.buffers.iter().map(place))
}

/// An `MCQ3` call's session, handle, result threshold, pickle length,
/// buffers and inline pickle (a view).
#[pyfunction]
pub fn parse_call<'py>(call: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let py = call.py();
    let payload = Payload::new(call, "call")?;
    let parsed = segmented::parse_call(&payload.bytes()).map_err(codec_error)?;
    let header = parsed.header;
    let inline = slice(&payload.view()?, parsed.inline)?;
    let session = PyBytes::new(py, &header.session);
    let buffers = places(py, &parsed.layout)?;
    let pickle_bytes = parsed.layout.pickle_bytes;
    (
        session,
        header.handle,
        header.result_threshold,
        pickle_bytes,
        buffers,
        inline,
    )
        .into_pyobject(py)
}

/// An `MCR2` response's handle, pickle length and buffers.
#[pyfunction]
pub fn parse_response<'py>(response: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let py = response.py();
    let payload = Payload::new(response, "response")?;
    let (handle, layout) = segmented::parse_response(&payload.bytes()).map_err(codec_error)?;
    (handle, layout.pickle_bytes, places(py, &layout)?).into_pyobject(py)
}

/// A segment socket's record: `kind` (4 bytes), `status`, `handle`,
/// `token` (16 bytes).
#[pyfunction]
pub fn pack_record<'py>(
    py: Python<'py>,
    kind: &[u8],
    status: u32,
    handle: u64,
    token: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let record = Record {
        kind: fixed("record kind", kind).map_err(codec_error)?,
        status,
        handle,
        token: fixed("token", token).map_err(codec_error)?,
    };
    Ok(PyBytes::new(py, &record.encode()))
}

/// A record's kind, status, handle and token.
#[pyfunction]
pub fn unpack_record<'py>(data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let py = data.py();
    let record = Record::read(&Payload::new(data, "record")?.bytes()).map_err(codec_error)?;
    let (kind, token) = (
        PyBytes::new(py, &record.kind),
        PyBytes::new(py, &record.token),
    );
    (kind, record.status, record.handle, token).into_pyobject(py)
}
