//! Bytes handed to Python without a copy: the one place of the extension
//! that fills in a `Py_buffer` (the buffer protocol), for [`Exported`]
//! memory an object keeps valid for as long as it is exported.

use std::ffi::{c_int, c_void};

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;

/// Memory an exporting object owns: where it starts, how long it is, and
/// whether Python may write to it.
#[derive(Debug, Clone, Copy)]
pub struct Exported {
    pub ptr: *const u8,
    pub len: usize,
    pub writable: bool,
}

/// Fills in `view` for `memory`, exported by `owner` (which Python keeps
/// alive for as long as the view lives).
///
/// # Safety
/// `view` must be the pointer Python passed to `__getbuffer__`, and
/// `memory` must stay valid, and not move, until `owner`'s
/// `__releasebuffer__` has been called for this view.
pub unsafe fn fill(
    view: *mut ffi::Py_buffer,
    flags: c_int,
    memory: Exported,
    owner: Bound<'_, PyAny>,
) -> PyResult<()> {
    if view.is_null() {
        return Err(PyBufferError::new_err("no view to fill"));
    }
    if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE && !memory.writable {
        return Err(PyBufferError::new_err("the buffer is read-only"));
    }
    let len = isize::try_from(memory.len)
        .map_err(|_| PyBufferError::new_err("the buffer is too large for Python"))?;
    // SAFETY: `view` is the non-null pointer Python passed in (the caller
    // vouches); `PyBuffer_FillInfo` fills it for a one-dimensional,
    // contiguous byte buffer and takes a reference to `owner`, which keeps
    // the memory valid (the caller vouches) until the view is released.
    let filled = unsafe {
        ffi::PyBuffer_FillInfo(
            view,
            owner.as_ptr(),
            memory.ptr.cast_mut().cast::<c_void>(),
            len,
            c_int::from(!memory.writable),
            flags,
        )
    };
    if filled == -1 {
        return Err(PyErr::fetch(owner.py()));
    }
    Ok(())
}

/// A held view of any contiguous buffer's bytes, whatever its item format
/// (a response's pieces: bytes, and `PickleBuffer`s of numpy arrays).
pub struct HeldBytes(Box<ffi::Py_buffer>);

impl HeldBytes {
    /// Holds `object`'s bytes; a `BufferError` if it has no contiguous ones.
    pub fn get(object: &Bound<'_, PyAny>) -> PyResult<HeldBytes> {
        let mut view: Box<ffi::Py_buffer> = Box::new(ffi::Py_buffer::new());
        // SAFETY: `view` is a live, boxed `Py_buffer` (it does not move);
        // `PyBUF_SIMPLE` asks for one contiguous run of bytes, any format.
        let got =
            unsafe { ffi::PyObject_GetBuffer(object.as_ptr(), &mut *view, ffi::PyBUF_SIMPLE) };
        if got == -1 {
            return Err(PyErr::fetch(object.py()));
        }
        Ok(HeldBytes(view))
    }

    /// Its bytes. Read them with the GIL held: another Python thread could
    /// write to them otherwise.
    pub fn bytes(&self) -> &[u8] {
        let len = usize::try_from(self.0.len).unwrap_or(0);
        if len == 0 || self.0.buf.is_null() {
            return &[];
        }
        // SAFETY: a `PyBUF_SIMPLE` view is `len` contiguous bytes at `buf`,
        // valid until it is released in `drop`, which the borrow outlives.
        unsafe { std::slice::from_raw_parts(self.0.buf.cast::<u8>().cast_const(), len) }
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        // SAFETY: the view was filled by `PyObject_GetBuffer` and is released
        // once; dropped where it was made, with the GIL held (the class that
        // holds it is used from Python only).
        Python::attach(|_| unsafe { ffi::PyBuffer_Release(&mut *self.0) });
    }
}
