//! The shared-memory transport (in progress): per-worker rings in one segment.

pub mod doorbell;
pub mod frame;
pub mod ring;
pub mod runtime_dir;
pub mod segment;
