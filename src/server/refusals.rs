//! The one place where a call refused on arrival is counted: every refusal
//! (a bad token, a request over the limit, a malformed payload, a full
//! queue, a gateway shutting down) passes through [`Refusals::refuse`] on
//! its way to becoming a status, or [`Refusals::count`] on its way to
//! becoming a call's error in a stream.

use std::sync::Arc;

use tonic::Status;

use crate::error::GatewayError;
use crate::metrics::{Metrics, Unserved};

/// Counts refusals and turns them into statuses.
#[derive(Debug, Clone)]
pub struct Refusals(Arc<Metrics>);

impl Refusals {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Refusals(metrics)
    }

    /// Counts `err` as a refused call and returns the status to send.
    pub fn refuse(&self, err: GatewayError) -> Status {
        self.count(&err);
        err.into()
    }

    /// Counts `err` as a refused call (a call of a stream, answered in it).
    pub fn count(&self, err: &GatewayError) {
        self.0.unserved(Unserved::Refused(err.kind()));
    }
}
