//! The shared-memory transport (in progress): per-worker rings in one segment.

pub mod frame;
pub mod ring;
