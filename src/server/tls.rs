//! TLS for the gRPC server: the identity (a PEM certificate chain and its
//! PEM private key), checked when the gateway starts, and the acceptor each
//! connection's handshake goes through: rustls with ring, offering HTTP/2
//! only (ALPN `h2`), as tonic's server did.

use std::fmt;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject as _};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// Why a certificate and key cannot serve TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the certificate file holds no PEM certificate")]
    NoCertificate,

    #[error("the certificate file is not valid PEM: {0}")]
    Certificate(pem::Error),

    #[error("the key file holds no PEM private key: {0}")]
    Key(pem::Error),

    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// The server's TLS identity, ready for handshakes.
#[derive(Clone)]
pub struct Tls(TlsAcceptor);

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// The identity in `cert` (a PEM chain, leaf first) and `key` (PEM).
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Tls, TlsError> {
        acceptor(cert, key).map(Tls)
    }

    /// The server's side of the handshake on `io`.
    pub fn accept<IO: AsyncRead + AsyncWrite + Unpin>(&self, io: IO) -> tokio_rustls::Accept<IO> {
        self.0.accept(io)
    }
}

fn acceptor(cert: &[u8], key: &[u8]) -> Result<TlsAcceptor, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Certificate)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(TlsError::Key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_a_pem_identity_are_refused_with_the_reason() {
        let err = Tls::from_pem(b"not a certificate\n", b"not a key\n").unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate), "{err}");
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = Tls::from_pem(cert, b"not a key\n").unwrap_err();
        assert!(matches!(err, TlsError::Key(_)), "{err}");
    }
}
