//! Where a client's calls go: one gateway, a list of them, or every
//! address of a DNS name, with what every connection shares (TLS, the
//! `:authority`).
//!
//! Several gateways are balanced as gRPC's `round_robin` does: each call
//! takes the next gateway in turn; one that could not be reached is passed
//! over for a while ([`gateway::MAX_BACKOFF`] at most) and comes back into
//! the rotation once it answers a dial; only when none can be reached does
//! the call fail, `UNAVAILABLE`. A DNS name is resolved at first use and
//! again when a dial fails (at most once a second), keeping the
//! connections of addresses that remain.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Uri;

use super::dial::{Place, Sender, Tls, TlsSetupError};
use super::failure::CallFailure;
use super::gateway::Gateway;

/// How often a DNS name may be resolved again after failed dials.
const RESOLVE_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// What a target is made of, as the Python side parsed it.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// The gateways (`HOST:PORT`, or Unix sockets), or none for a DNS name.
    pub places: Vec<Place>,
    /// `NAME:PORT` to resolve, for a DNS name.
    pub dns: Option<String>,
    /// The `:authority` (`HOST:PORT`) sent with calls and checked by TLS,
    /// when not the only place's own.
    pub authority: Option<String>,
    pub tls: bool,
    /// The PEM CA file's contents to trust; `None`: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// Why a target cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("a target needs at least one gateway or a DNS name")]
    Empty,
    #[error("{0:?} is not a valid authority")]
    Authority(String),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

/// A connection, and the gateway it goes to (which can dial again).
pub struct Link {
    pub sender: Sender,
    pub gateway: Arc<Gateway>,
}

/// The gateways of one target and the rotation over them.
pub struct Target {
    gateways: Mutex<Arc<Vec<Arc<Gateway>>>>,
    next: AtomicUsize,
    dns: Option<String>,
    resolved: Mutex<Option<Instant>>,
    tls: Option<Tls>,
    origin: Uri,
}

impl Target {
    pub fn new(spec: TargetSpec) -> Result<Target, TargetError> {
        let authority = match (&spec.authority, spec.places.as_slice(), &spec.dns) {
            (Some(authority), _, _) => authority.clone(),
            (None, _, Some(name)) => name.clone(),
            (None, [Place::Tcp(address), ..], None) => address.clone(),
            // What grpcio sends over a Unix socket (see `_client.py`).
            (None, [Place::Unix(_), ..], None) => "localhost".to_owned(),
            (None, [], None) => return Err(TargetError::Empty),
        };
        let scheme = if spec.tls { "https" } else { "http" };
        let origin = Uri::try_from(format!("{scheme}://{authority}"))
            .map_err(|_| TargetError::Authority(authority.clone()))?;
        let tls = if spec.tls {
            let host = origin.host().unwrap_or(&authority);
            Some(Tls::new(spec.ca_pem.as_deref(), host)?)
        } else {
            None
        };
        let gateways = spec
            .places
            .into_iter()
            .map(|place| Arc::new(Gateway::new(place)));
        Ok(Target {
            gateways: Mutex::new(Arc::new(gateways.collect())),
            next: AtomicUsize::new(0),
            dns: spec.dns,
            resolved: Mutex::new(None),
            tls,
            origin,
        })
    }

    /// The scheme and authority of every call's URI.
    pub fn origin(&self) -> &Uri {
        &self.origin
    }

    /// What every connection's TLS is.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// A connection to the next gateway in turn that can be reached.
    pub async fn connection(&self) -> Result<Link, CallFailure> {
        if self.dns.is_some() && self.resolved.lock().expect("resolved").is_none() {
            self.resolve().await?;
        }
        match self.try_each().await {
            Err(failure) if self.dns.is_some() && self.due_for_resolving() => {
                self.resolve().await?;
                self.try_each().await.map_err(|_| failure)
            }
            outcome => outcome,
        }
    }

    async fn try_each(&self) -> Result<Link, CallFailure> {
        let gateways = Arc::clone(&self.gateways.lock().expect("gateways"));
        if gateways.is_empty() {
            let name = self.dns.as_deref().unwrap_or_default();
            return Err(CallFailure::unavailable(format!(
                "{name} resolves to no address"
            )));
        }
        // The turn goes round the gateways that can be reached, as gRPC's
        // round robin goes round its ready connections; the others are
        // tried last.
        let now = Instant::now();
        let (up, down): (Vec<_>, Vec<_>) =
            gateways.iter().partition(|gateway| !gateway.is_down(now));
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let in_turn = (0..up.len()).map(|i| up[(start + i) % up.len()]);
        let mut failure = None;
        for gateway in in_turn.chain(down) {
            match gateway.connection(self.tls.as_ref()).await {
                Ok(sender) => {
                    let gateway = Arc::clone(gateway);
                    return Ok(Link { sender, gateway });
                }
                Err(error) => failure = Some(error),
            }
        }
        Err(failure.expect("at least one gateway was tried"))
    }

    fn due_for_resolving(&self) -> bool {
        let resolved = self.resolved.lock().expect("resolved");
        resolved.is_none_or(|at| at.elapsed() >= RESOLVE_AT_MOST_EVERY)
    }

    /// Resolves the DNS name now; keeps the gateways of addresses that remain.
    async fn resolve(&self) -> Result<(), CallFailure> {
        let name = self.dns.as_deref().expect("a DNS target");
        *self.resolved.lock().expect("resolved") = Some(Instant::now());
        let addresses = tokio::net::lookup_host(name)
            .await
            .map_err(|error| CallFailure::unavailable(format!("cannot resolve {name}: {error}")))?;
        let mut gateways = self.gateways.lock().expect("gateways");
        let mut places: Vec<Place> = Vec::new();
        for address in addresses {
            let place = Place::Tcp(address.to_string());
            if !places.contains(&place) {
                places.push(place);
            }
        }
        let kept = places
            .into_iter()
            .map(|place| {
                gateways
                    .iter()
                    .find(|gateway| *gateway.place() == place)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Gateway::new(place)))
            })
            .collect();
        *gateways = Arc::new(kept);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::net::TcpListener;

    use super::*;

    /// A listener that accepts and keeps every connection (HTTP/2 needs
    /// nothing more to open a connection from the client's side).
    async fn listening() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                kept.push(stream);
            }
        });
        address
    }

    fn target(addresses: &[SocketAddr]) -> Target {
        Target::new(TargetSpec {
            places: addresses
                .iter()
                .map(|a| Place::Tcp(a.to_string()))
                .collect(),
            dns: None,
            authority: None,
            tls: false,
            ca_pem: None,
        })
        .unwrap()
    }

    async fn turns(target: &Target, calls: usize) -> Vec<String> {
        let mut order = Vec::new();
        for _ in 0..calls {
            let link = target.connection().await.unwrap();
            order.push(link.gateway.place().to_string());
        }
        order
    }

    #[tokio::test]
    async fn calls_take_the_gateways_in_turn() {
        let (a, b, c) = (listening().await, listening().await, listening().await);
        let order = turns(&target(&[a, b, c]), 6).await;
        let [a, b, c] = [a, b, c].map(|address| address.to_string());
        assert_eq!(order, [&a, &b, &c, &a, &b, &c].map(String::clone));
    }

    #[tokio::test]
    async fn a_gateway_that_cannot_be_reached_leaves_the_turn_to_the_others() {
        let (a, b) = (listening().await, listening().await);
        // Bound, then closed: connections to it are refused.
        let gone = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let order = turns(&target(&[a, gone, b]), 5).await;
        let [a, b] = [a, b].map(|address| address.to_string());
        assert_eq!(order, [&a, &b, &a, &b, &a].map(String::clone));
    }

    #[tokio::test]
    async fn with_none_reachable_the_call_is_unavailable_and_names_the_gateway() {
        let gone = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let failure = target(&[gone]).connection().await.err().unwrap();
        assert_eq!(failure.code, tonic::Code::Unavailable as i32);
        assert!(
            failure.message.contains(&gone.to_string()),
            "{}",
            failure.message
        );
    }
}
