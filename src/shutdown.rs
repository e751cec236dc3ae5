//! Requests to stop: every SIGINT and SIGTERM the process receives. The
//! first asks for a graceful stop; a second one, for an immediate one.

use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::SignalStream;
use tokio_stream::{Stream, StreamExt as _};

/// Each SIGINT or SIGTERM, by name, as it arrives.
pub fn requests() -> std::io::Result<impl Stream<Item = &'static str> + Send + Unpin> {
    let interrupt = SignalStream::new(signal(SignalKind::interrupt())?).map(|()| "SIGINT");
    let terminate = SignalStream::new(signal(SignalKind::terminate())?).map(|()| "SIGTERM");
    Ok(interrupt.merge(terminate))
}
