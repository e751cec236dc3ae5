//! One gateway as the client sees it: where it is, its connection (opened
//! on first use, opened again once closed), and since when it has been
//! unreachable, so that a balanced target sends calls elsewhere meanwhile.
//! One connection carries every call to the gateway, as gRPC's does.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::dial::{self, Place, Sender, Tls};
use super::failure::CallFailure;

/// How long a gateway that could not be reached is passed over, doubling
/// after each further failure up to [`MAX_BACKOFF`] (gRPC's reconnect
/// backoff starts at 1 s as well).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One gateway of a target.
pub struct Gateway {
    place: Place,
    state: Mutex<State>,
    /// Held while dialing: calls that find no connection wait for one dial.
    dialing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    sender: Option<Sender>,
    /// Set after a failed dial: until when to pass the gateway over, and
    /// the backoff that set it.
    down: Option<(Instant, Duration)>,
}

impl Gateway {
    pub fn new(place: Place) -> Gateway {
        Gateway {
            place,
            state: Mutex::new(State::default()),
            dialing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn place(&self) -> &Place {
        &self.place
    }

    /// Whether a recent dial failed (a balanced target tries others first).
    pub fn is_down(&self, now: Instant) -> bool {
        let state = self.state.lock().expect("gateway state");
        state.down.is_some_and(|(until, _)| now < until)
    }

    /// The open connection, or a new one.
    pub async fn connection(&self, tls: Option<&Tls>) -> Result<Sender, CallFailure> {
        if self.has_sender() && driven_by_callers() {
            // Nothing read the connection since the last call: let its task
            // take what came meanwhile (the gateway's GOAWAY, the end of
            // the connection) before a request is put on it.
            tokio::task::yield_now().await;
        }
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let dialed = dial::dial(&self.place, tls).await;
        let mut state = self.state.lock().expect("gateway state");
        match dialed {
            Ok(sender) => {
                state.sender = Some(sender.clone());
                state.down = None;
                Ok(sender)
            }
            Err(error) => {
                let backoff = state
                    .down
                    .map_or(FIRST_BACKOFF, |(_, last)| (last * 2).min(MAX_BACKOFF));
                state.down = Some((Instant::now() + backoff, backoff));
                Err(CallFailure::unavailable(format!(
                    "failed to connect to {}: {error}",
                    self.place
                )))
            }
        }
    }

    fn has_sender(&self) -> bool {
        self.state.lock().expect("gateway state").sender.is_some()
    }

    fn open(&self) -> Option<Sender> {
        let mut state = self.state.lock().expect("gateway state");
        if state.sender.as_ref().is_some_and(Sender::is_closed) {
            state.sender = None;
        }
        state.sender.clone()
    }
}

/// Whether this runtime runs only while callers wait on it (a current-thread
/// runtime), so that a connection is not read between calls.
fn driven_by_callers() -> bool {
    tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
}
