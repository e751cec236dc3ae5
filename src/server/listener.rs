//! The socket the gRPC server accepts connections on, bound from
//! `--listen`: TCP, or a Unix socket at a path ([`super::unix_socket`]).
//! Both are served the same way (`serve.rs`).

use std::net::SocketAddr;

use tokio::net::{TcpListener, UnixListener};

use super::unix_socket::{self, SocketFile, UnixSocketError};
use crate::config::ListenAddr;

/// A bound, listening socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Where a [`Listener`] is bound, as clients reach it. The Unix socket's
/// file goes with it: dropping this removes the file (if still ours), so
/// keep it until the gateway is done.
#[derive(Debug)]
pub enum Bound {
    /// The TCP address, with the port the system picked for port 0.
    Tcp(SocketAddr),
    Unix(SocketFile),
}

impl Bound {
    /// The address clients dial: `grpc://HOST:PORT` (`grpcs://` with TLS)
    /// or `unix:/ABSOLUTE/PATH`.
    pub fn url(&self, tls: bool) -> String {
        match self {
            Bound::Tcp(addr) if tls => format!("grpcs://{addr}"),
            Bound::Tcp(addr) => format!("grpc://{addr}"),
            Bound::Unix(file) => format!("unix:{}", file.path().display()),
        }
    }
}

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {addr}: {source}; pick another address")]
    Tcp {
        addr: SocketAddr,
        source: std::io::Error,
    },

    #[error(transparent)]
    Unix(#[from] UnixSocketError),
}

/// Binds `addr`.
pub async fn bind(addr: &ListenAddr) -> Result<(Listener, Bound), BindError> {
    match addr {
        ListenAddr::Tcp(addr) => {
            let (listener, local) = bind_tcp(*addr).await?;
            Ok((Listener::Tcp(listener), Bound::Tcp(local)))
        }
        ListenAddr::Unix(path) => {
            let (listener, file) = unix_socket::bind(path).await?;
            Ok((Listener::Unix(listener), Bound::Unix(file)))
        }
    }
}

/// Binds a TCP address; returns the listener and the address it got.
pub async fn bind_tcp(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let bound = async {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok((listener, local))
    };
    bound
        .await
        .map_err(|source| BindError::Tcp { addr, source })
}
