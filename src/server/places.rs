//! The places connections take, TCP or Unix socket alike: at most
//! `--max-connections` open at once (a place is taken before a connection
//! is accepted, so that more wait in the listen backlog), and with
//! `--max-connections-per-peer`, at most that many from one IP address (a
//! Unix socket's peers are one peer); a connection past its peer's share is
//! closed at once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Who is at the other end of a connection, as `--max-connections-per-peer`
/// counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    Ip(IpAddr),
    /// Anyone on the Unix socket: one peer.
    UnixSocket,
}

impl Peer {
    /// The peer at `addr` (an IPv4 address mapped into IPv6 is that IPv4
    /// address).
    pub fn of(addr: SocketAddr) -> Peer {
        Peer::Ip(addr.ip().to_canonical())
    }
}

/// The places connections take.
#[derive(Debug, Clone)]
pub struct Places {
    all: Arc<Semaphore>,
    per_peer: Option<Arc<PeerShares>>,
}

/// Connections open per peer, and the most one peer may have.
#[derive(Debug)]
struct PeerShares {
    max: usize,
    open: Mutex<HashMap<Peer, usize>>,
}

impl Places {
    /// `max` places in all, `per_peer` of them at most for one peer.
    pub fn new(max: usize, per_peer: Option<NonZeroUsize>) -> Self {
        Places {
            all: Arc::new(Semaphore::new(max)),
            per_peer: per_peer.map(|max| {
                Arc::new(PeerShares {
                    max: max.get(),
                    open: Mutex::default(),
                })
            }),
        }
    }

    /// Waits for a free place (taken before a connection is accepted, so
    /// that connections past the cap wait in the listen backlog).
    pub async fn free(&self) -> FreePlace {
        let permit = Arc::clone(&self.all)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        FreePlace {
            permit,
            per_peer: self.per_peer.clone(),
        }
    }
}

/// A place no connection holds yet.
#[derive(Debug)]
pub struct FreePlace {
    permit: OwnedSemaphorePermit,
    per_peer: Option<Arc<PeerShares>>,
}

impl FreePlace {
    /// Gives the place to a connection from `peer`, unless that peer holds
    /// its share already (then the place stays free).
    pub fn take(self, peer: Peer) -> Result<Place, FreePlace> {
        if let Some(shares) = &self.per_peer {
            let mut open = shares.open.lock().unwrap_or_else(|p| p.into_inner());
            let held = open.entry(peer).or_default();
            if *held >= shares.max {
                drop(open);
                return Err(self);
            }
            *held += 1;
        }
        Ok(Place {
            _permit: self.permit,
            share: self.per_peer.map(|shares| (shares, peer)),
        })
    }
}

/// A connection's place, given back when it is dropped.
#[derive(Debug)]
pub struct Place {
    _permit: OwnedSemaphorePermit,
    share: Option<(Arc<PeerShares>, Peer)>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some((shares, peer)) = &self.share {
            let mut open = shares.open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(held) = open.get_mut(peer) {
                *held -= 1;
                if *held == 0 {
                    open.remove(peer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_share_of_places_and_no_more() {
        let places = Places::new(8, NonZeroUsize::new(2));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let free = || runtime.block_on(places.free());
        let one = Peer::of("10.0.0.1:5000".parse().unwrap());
        // The same address, mapped into IPv6, from another port.
        let same = Peer::of("[::ffff:10.0.0.1]:6000".parse().unwrap());
        let other = Peer::of("10.0.0.2:5000".parse().unwrap());
        let first = free().take(one).unwrap();
        let second = free().take(same).unwrap();
        let refused = free().take(one).unwrap_err();
        let third = refused.take(other).expect("the place stayed free");
        drop(first);
        let again = free()
            .take(one)
            .expect("a place of this peer was given back");
        drop((second, third, again));
        assert!(places.per_peer.unwrap().open.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn past_the_cap_a_connection_waits_for_a_place() {
        let places = Places::new(1, None);
        let held = places.free().await.take(Peer::UnixSocket).unwrap();
        let waiting = tokio::spawn({
            let places = places.clone();
            async move { places.free().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a second place was free");
        drop(held);
        waiting.await.unwrap().take(Peer::UnixSocket).unwrap();
    }
}
