//! Opening one HTTP/2 connection to one gateway: TCP (plaintext or TLS,
//! ALPN `h2`, trusting a PEM CA file or the system's roots) or a Unix
//! socket, with the same flow-control windows as the gateway's own
//! connections, so that large payloads are not throttled by round trips.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::server::{CONNECTION_WINDOW_BYTES, STREAM_WINDOW_BYTES};

/// The sending half of a connection: requests go through it to the
/// connection's task.
pub type Sender = SendRequest<tonic::body::Body>;

/// Where one gateway listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Place {
    /// `HOST:PORT` (a name is resolved at each dial).
    Tcp(String),
    Unix(PathBuf),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Tcp(address) => f.write_str(address),
            Place::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Why TLS cannot be set up for a target.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("the CA file holds no PEM certificate")]
    NoCertificate,
    #[error("the CA file is not valid PEM: {0}")]
    Pem(#[from] tokio_rustls::rustls::pki_types::pem::Error),
    #[error("the CA file's certificate is refused: {0}")]
    Certificate(#[from] tokio_rustls::rustls::Error),
    #[error("no system root certificate could be loaded: {0}")]
    NoSystemRoots(String),
    #[error("{0:?} is not a host name or an IP address TLS can check")]
    ServerName(String),
}

/// TLS for every connection of a target: whom to trust, and the name the
/// gateway's certificate must be valid for.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl Tls {
    /// Trusting the certificates of `ca_pem` (PEM), or the system's roots
    /// when it is `None`; checking certificates against `host`.
    pub fn new(ca_pem: Option<&[u8]>, host: &str) -> Result<Tls, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        match ca_pem {
            Some(pem) => {
                let certificates =
                    CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?;
                if certificates.is_empty() {
                    return Err(TlsSetupError::NoCertificate);
                }
                for certificate in certificates {
                    roots.add(certificate)?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map_or_else(|| "the system has none".to_owned(), ToString::to_string);
                    return Err(TlsSetupError::NoSystemRoots(why));
                }
            }
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|_| TlsSetupError::ServerName(host.to_owned()))?
            .to_owned();
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }
}

/// How long opening a connection may take (TCP, TLS and HTTP/2 handshakes):
/// gRPC's minimum connect timeout, so that a gateway whose address swallows
/// packets fails the call in seconds rather than the kernel's two minutes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Opens a connection to `place`, with `tls` if given (TCP only), and
/// starts its task on the current runtime; at most [`CONNECT_TIMEOUT`].
pub async fn dial(place: &Place, tls: Option<&Tls>) -> io::Result<Sender> {
    tokio::time::timeout(CONNECT_TIMEOUT, open(place, tls))
        .await
        .unwrap_or_else(|_| {
            let waited = CONNECT_TIMEOUT.as_secs();
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {waited} s"),
            ))
        })
}

async fn open(place: &Place, tls: Option<&Tls>) -> io::Result<Sender> {
    match place {
        Place::Unix(path) => handshake(UnixStream::connect(path).await?).await,
        Place::Tcp(address) => {
            let tcp = TcpStream::connect(address.as_str()).await?;
            tcp.set_nodelay(true)?;
            match tls {
                None => handshake(tcp).await,
                Some(tls) => {
                    let stream = tls.connector.connect(tls.name.clone(), tcp).await?;
                    handshake(stream).await
                }
            }
        }
    }
}

async fn handshake<IO>(io: IO) -> io::Result<Sender>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .handshake(TokioIo::new(io))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        // Ends when the connection closes; its calls hear why.
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A self-signed certificate, only for something to trust.
    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBejCCAR+gAwIBAgIUYARaL+2vRTOU13DPyhd49OrwLGYwCgYIKoZIzj0EAwIw\nEjEQMA4GA1UEAwwHdGVzdC1jYTAeFw0yNjEyMDgwNDU3MjVaFw0zNjEyMDUwNDU3\nMjVaMBIxEDAOBgNVBAMMB3Rlc3QtY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC\nAAS6yHxeGZNyohdhPLahHjTbhEv+I3wfIHYmF6UTyCeKX+P6ve6mcpWutw3m3M0L\nuLWMFaZrPoFpIblaqiz9ZEHQo1MwUTAdBgNVHQ4EFgQUZKW0zTSYcDp1NHb9EX0l\nJE7vDRYwHwYDVR0jBBgwFoAUZKW0zTSYcDp1NHb9EX0lJE7vDRYwDwYDVR0TAQH/\nBAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEAq+JzhncIimty+OE3s+D04UIv/nve\nyvM9u8peWeXH1YsCIQDZKVny6xiGt5JadHxp26Yi46BfCowDRDwvADWyoX8low==\n-----END CERTIFICATE-----\n";

    #[tokio::test(start_paused = true)]
    async fn a_gateway_that_never_answers_the_handshake_fails_the_dial_in_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let place = Place::Tcp(listener.local_addr().unwrap().to_string());
        // Accepted, then silent: the TLS handshake waits for ever.
        let silent = tokio::spawn(async move { listener.accept().await.map(|(stream, _)| stream) });
        let tls = Tls::new(Some(CA.as_bytes()), "127.0.0.1").unwrap();
        let dialed = tokio::time::timeout(CONNECT_TIMEOUT * 2, dial(&place, Some(&tls))).await;
        let failed = dialed
            .expect("the dial ended by itself")
            .expect_err("no connection");
        assert_eq!(failed.kind(), io::ErrorKind::TimedOut);
        drop(silent);
    }
}
