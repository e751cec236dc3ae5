//! Bounds on connections: at most `--max-connections` open at once (the
//! next one waits in the listen backlog until one closes), Nagle's algorithm
//! off, and HTTP/2 keepalive pings so that a peer that vanished without
//! closing its connection is noticed and its connection dropped.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::server::{Connected, TcpIncoming};

/// How often an HTTP/2 connection with no traffic is pinged, and how long
/// the peer has to answer before the connection is dropped.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Accepted connections on `listener`, at most `max` open at once.
pub fn limited(
    listener: TcpListener,
    max: usize,
) -> impl Stream<Item = io::Result<Limited<TcpStream>>> {
    let permits = Arc::new(Semaphore::new(max));
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .then(move |accepted| {
            let permits = Arc::clone(&permits);
            async move {
                let io = accepted?;
                let permit = permits
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                Ok(Limited {
                    io,
                    _permit: permit,
                })
            }
        })
}

/// A connection that holds one of the permits while it is open.
#[derive(Debug)]
pub struct Limited<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
}

impl<T: Connected> Connected for Limited<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_past_the_cap_waits_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(limited(listener, 1));
        let _first_client = TcpStream::connect(addr).await.unwrap();
        let first = accepted.next().await.unwrap().unwrap();
        let _second_client = TcpStream::connect(addr).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(200), accepted.next()).await;
        assert!(waiting.is_err(), "a second connection got in past the cap");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), accepted.next()).await;
        assert!(matches!(second, Ok(Some(Ok(_)))));
    }
}
