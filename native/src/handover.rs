//! Descriptors Python hands the extension, as plain numbers: the one place
//! that turns them into Rust's owned or borrowed descriptors. The Python
//! callers are the worker's own (`worker_shim`), which keep the contracts
//! below.

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Takes over `fd`, an open descriptor the caller gives up (it must not
/// use or close it again).
pub fn take(fd: RawFd) -> PyResult<OwnedFd> {
    check(fd)?;
    // SAFETY: the caller hands over an open descriptor it will not close,
    // so the `OwnedFd` is its only owner from now on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Borrows `fd`, an open descriptor the caller keeps open until the call
/// that borrows it has returned.
pub fn borrow<'a>(fd: RawFd) -> PyResult<BorrowedFd<'a>> {
    check(fd)?;
    // SAFETY: the caller keeps `fd` open for the call; the borrow is used
    // within it only, never kept.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}

fn check(fd: RawFd) -> PyResult<()> {
    if fd < 0 {
        return Err(PyValueError::new_err(format!("{fd} is not a descriptor")));
    }
    Ok(())
}
