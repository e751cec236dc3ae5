//! The one place where a call refused on arrival is counted: every refusal
//! (a bad token, a request over the limit, a malformed payload, a full
//! queue, a gateway shutting down) passes through [`Refusals::refuse`] on
//! its way to becoming a status.

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
        self.0.unserved(Unserved::Refused(err.kind()));
        err.into()
    }
}
