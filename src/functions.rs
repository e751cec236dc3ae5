//! Functions by digest: the gateway's part of "a function travels once"
//! (the requests and answers are [`crate::wire::calls`] and
//! [`crate::wire::answers`]).
//!
//! - [`FunctionCache`]: functions' pickles by digest, bounded by bytes (each
//!   entry counted with its bookkeeping), least recently used evicted first;
//!   an attached function is checked against its digest, and kept only once
//!   its call is queued, so no client can pass off one function under
//!   another's digest, and a refused call leaves nothing behind.
//! - [`WorkerCall`]: a call with its function as a worker gets it: by digest
//!   for a worker that has it ([`KnownFunctions`]: the functions it said it
//!   kept), attached otherwise.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;

use crate::error::{Direction, GatewayError};
use crate::segments::CallSegments;
use crate::wire::Digest;
use crate::wire::calls::{self, Attached, Request};

/// Default `--function-cache-bytes`.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// How many functions the gateway remembers having sent each worker; the
/// worker keeps as many (`worker_shim/_functions.py`). Should the two
/// disagree, a worker's miss costs one more round trip, never the call.
pub const KNOWN_PER_WORKER: usize = 256;

/// Attached functions at least this large are checked off the async runtime.
const HASH_OFF_RUNTIME_BYTES: usize = 256 * 1024;

/// What one cache entry costs besides its pickle (the digest, the map's and
/// the LRU list's bookkeeping, the allocation): counted against the bound,
/// so that a flood of tiny "functions" cannot grow the gateway unbounded.
const ENTRY_OVERHEAD_BYTES: usize = 256;

/// A call ready for a worker.
#[derive(Debug, Clone)]
pub struct WorkerCall {
    digest: Digest,
    call: Bytes,
    function: Function,
    /// What it brought in shared memory, and where its result goes.
    segments: Option<Arc<CallSegments>>,
}

#[derive(Debug, Clone)]
enum Function {
    /// The client attached it: its whole payload goes as it came; the pickle
    /// (a slice of it) is copied into the cache once the call is queued.
    InPayload { whole: Bytes, pickled: Bytes },
    /// The pickle from the cache, attached here when a worker needs it.
    Cached(Bytes),
}

impl WorkerCall {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The bytes this call keeps alive while it waits: its payload, its
    /// segment, and a cached function's pickle (which outlives its eviction
    /// for as long).
    pub fn len(&self) -> usize {
        let segment = self
            .segments
            .as_ref()
            .map_or(0, |segments| segments.charge());
        segment
            + match &self.function {
                Function::InPayload { whole, .. } => whole.len(),
                Function::Cached(pickled) => self.call.len() + pickled.len(),
            }
    }

    /// The call, with what it brought in shared memory.
    pub fn with_segments(mut self, segments: Option<CallSegments>) -> WorkerCall {
        self.segments = segments.map(Arc::new);
        self
    }

    pub fn segments(&self) -> Option<&CallSegments> {
        self.segments.as_deref()
    }

    /// Whether the call holds no bytes at all (never: it has a header).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The request for a worker that holds the function.
    pub fn by_digest(&self) -> Bytes {
        self.call.clone()
    }

    /// The request for a worker that does not.
    pub fn attached(&self) -> Bytes {
        match &self.function {
            Function::InPayload { whole, .. } => whole.clone(),
            // The cache holds only functions that came attached, each
            // within the length an attached function can have.
            Function::Cached(pickled) => {
                calls::attach(pickled, &self.call).expect("a function that came attached")
            }
        }
    }

    /// The size of [`WorkerCall::attached`].
    fn attached_len(&self) -> usize {
        match &self.function {
            Function::InPayload { whole, .. } => whole.len(),
            Function::Cached(pickled) => calls::attached_len(pickled.len(), self.call.len()),
        }
    }
}

/// Functions' pickles by digest, at most `max_bytes` of them.
#[derive(Debug)]
pub struct FunctionCache {
    store: Mutex<Store>,
    max_bytes: usize,
    /// `--max-payload-bytes`: a call with its function attached must fit it
    /// whether the client attached it or the gateway does.
    max_request_bytes: usize,
}

#[derive(Debug)]
struct Store {
    entries: LruCache<Digest, Bytes>,
    bytes: usize,
}

impl FunctionCache {
    pub fn new(max_bytes: usize, max_request_bytes: usize) -> Self {
        FunctionCache {
            store: Mutex::new(Store {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            max_bytes,
            max_request_bytes,
        }
    }

    /// The call with its function: the attached one (checked against its
    /// digest), or the one kept under the digest its call names. A digest
    /// the cache does not hold is [`GatewayError::FunctionUnknown`]: the
    /// client sends the call again with the function attached. A call whose
    /// request with its function attached is over the payload limit is
    /// refused either way, so that whether it runs does not depend on what
    /// the cache holds. Once the call is queued, [`FunctionCache::keep`]
    /// its function.
    pub async fn resolve(&self, request: Request) -> Result<WorkerCall, GatewayError> {
        self.resolve_holding(request, None).await
    }

    /// As [`FunctionCache::resolve`], with `held` (the pickle of the
    /// function the call names, kept by its caller) standing in for the
    /// cache if it no longer holds it: a stream keeps its functions for as
    /// long as it lasts.
    pub async fn resolve_holding(
        &self,
        request: Request,
        held: Option<Bytes>,
    ) -> Result<WorkerCall, GatewayError> {
        let (digest, call, attached) = request.into_parts();
        let function = match attached {
            Some(Attached { whole, pickled }) => {
                if self.get(&digest).as_deref() != Some(&pickled[..])
                    && !has_digest(&pickled, &digest).await?
                {
                    return Err(GatewayError::FunctionMismatch);
                }
                Function::InPayload { whole, pickled }
            }
            None => Function::Cached(
                self.get(&digest)
                    .or(held)
                    .ok_or(GatewayError::FunctionUnknown)?,
            ),
        };
        let resolved = WorkerCall {
            digest,
            call,
            function,
            segments: None,
        };
        let size = resolved.attached_len();
        if size > self.max_request_bytes {
            return Err(GatewayError::PayloadTooLarge {
                direction: Direction::Request,
                size,
                limit: self.max_request_bytes,
            });
        }
        Ok(resolved)
    }

    /// Keeps the function `call` brought attached (a copy of its pickle: a
    /// slice would keep the whole request alive).
    pub fn keep(&self, call: &WorkerCall) {
        if let Function::InPayload { pickled, .. } = &call.function {
            self.insert(call.digest, pickled);
        }
    }

    /// The pickle kept under `digest`, shared (not copied).
    pub fn get(&self, digest: &Digest) -> Option<Bytes> {
        self.lock().entries.get(digest).cloned()
    }

    /// Keeps a copy of `pickled`, evicting the least recently used past
    /// the bound.
    fn insert(&self, digest: Digest, pickled: &[u8]) {
        let cost = pickled.len() + ENTRY_OVERHEAD_BYTES;
        if cost > self.max_bytes {
            return;
        }
        let mut store = self.lock();
        if store.entries.get(&digest).is_some() {
            return;
        }
        store.entries.put(digest, Bytes::copy_from_slice(pickled));
        store.bytes += cost;
        while store.bytes > self.max_bytes {
            let Some((_, evicted)) = store.entries.pop_lru() else {
                break;
            };
            store.bytes -= evicted.len() + ENTRY_OVERHEAD_BYTES;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether `pickled` has `digest`; fails only if the runtime is shutting
/// down under a large check.
async fn has_digest(pickled: &Bytes, digest: &Digest) -> Result<bool, GatewayError> {
    fn check(pickled: &[u8], digest: &Digest) -> bool {
        ring::digest::digest(&ring::digest::SHA256, pickled).as_ref() == digest
    }
    if pickled.len() < HASH_OFF_RUNTIME_BYTES {
        return Ok(check(pickled, digest));
    }
    let (pickled, digest) = (pickled.clone(), *digest);
    tokio::task::spawn_blocking(move || check(&pickled, &digest))
        .await
        .map_err(|_| GatewayError::ShuttingDown)
}

/// The functions one worker process has been sent, as far as the gateway
/// knows: the most recent [`KNOWN_PER_WORKER`].
#[derive(Debug)]
pub struct KnownFunctions(LruCache<Digest, ()>);

impl Default for KnownFunctions {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(KNOWN_PER_WORKER).expect("a positive bound");
        KnownFunctions(LruCache::new(capacity))
    }
}

impl KnownFunctions {
    /// Whether the worker was sent `digest` (and counts it as used now).
    pub fn knows(&mut self, digest: &Digest) -> bool {
        self.0.get(digest).is_some()
    }

    /// The worker now holds `digest`.
    pub fn learned(&mut self, digest: Digest) {
        self.0.put(digest, ());
    }
}

/// Requests as the client codec makes them, for tests.
#[cfg(any(test, feature = "test-support"))]
pub mod encode {
    use super::*;

    /// The digest of `pickled`.
    pub fn digest(pickled: &[u8]) -> Digest {
        let hash = ring::digest::digest(&ring::digest::SHA256, pickled);
        Digest::try_from(hash.as_ref()).expect("SHA-256 is 32 bytes")
    }

    /// A call of `pickled`'s function by digest, `arguments` standing for
    /// its pickled arguments.
    pub fn by_digest(pickled: &[u8], arguments: &[u8]) -> Bytes {
        [&calls::by_digest_header(&digest(pickled))[..], arguments]
            .concat()
            .into()
    }

    /// The same call with the function attached.
    pub fn attached(pickled: &[u8], arguments: &[u8]) -> Bytes {
        attach(pickled, &by_digest(pickled, arguments))
    }

    /// `call` with `pickled` attached, whatever its digest.
    pub fn attach(pickled: &[u8], call: &[u8]) -> Bytes {
        calls::attach(pickled, call).expect("a function under 4 GiB")
    }

    /// The same call as the cache resolves it for a worker.
    pub fn worker_call(pickled: &[u8], arguments: &[u8]) -> WorkerCall {
        WorkerCall {
            digest: digest(pickled),
            call: by_digest(pickled, arguments),
            function: Function::Cached(Bytes::copy_from_slice(pickled)),
            segments: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FUNCTION: &[u8] = b"pickled function";

    const LIMIT: usize = 1 << 30;

    /// Resolves an attached call and keeps its function, as the service does
    /// once the call is queued.
    async fn deliver(cache: &FunctionCache, pickled: &[u8], arguments: &[u8]) -> WorkerCall {
        let request = Request::parse(encode::attached(pickled, arguments)).unwrap();
        let call = cache.resolve(request).await.unwrap();
        cache.keep(&call);
        call
    }

    async fn held(cache: &FunctionCache, function: &[u8]) -> bool {
        let request = Request::parse(encode::by_digest(function, b"")).unwrap();
        cache.resolve(request).await.is_ok()
    }

    #[tokio::test]
    async fn an_attached_function_is_kept_and_later_calls_name_it() {
        let cache = FunctionCache::new(1 << 20, LIMIT);
        let by_digest = || Request::parse(encode::by_digest(FUNCTION, b"args")).unwrap();
        assert_eq!(
            cache.resolve(by_digest()).await.unwrap_err(),
            GatewayError::FunctionUnknown
        );
        let first = deliver(&cache, FUNCTION, b"args").await;
        assert_eq!(first.attached(), encode::attached(FUNCTION, b"args"));
        let later = cache.resolve(by_digest()).await.unwrap();
        assert_eq!(later.by_digest(), encode::by_digest(FUNCTION, b"args"));
        // Attached here for a worker that has not seen it.
        assert_eq!(later.attached(), encode::attached(FUNCTION, b"args"));
        // It holds the function's pickle alive while it waits: counted.
        assert_eq!(later.len(), later.by_digest().len() + FUNCTION.len());
    }

    #[tokio::test]
    async fn a_function_is_kept_only_once_its_call_is_queued() {
        let cache = FunctionCache::new(1 << 20, LIMIT);
        let request = Request::parse(encode::attached(FUNCTION, b"args")).unwrap();
        let _refused = cache.resolve(request).await.unwrap();
        assert!(!held(&cache, FUNCTION).await);
    }

    #[tokio::test]
    async fn a_function_under_another_digest_is_refused_and_not_kept() {
        let cache = FunctionCache::new(1 << 20, LIMIT);
        let forged = encode::attach(b"evil", &encode::by_digest(FUNCTION, b"args"));
        let err = cache
            .resolve(Request::parse(forged).unwrap())
            .await
            .unwrap_err();
        assert_eq!(err, GatewayError::FunctionMismatch);
        assert!(!held(&cache, FUNCTION).await);
    }

    #[tokio::test]
    async fn large_functions_are_checked_too() {
        let cache = FunctionCache::new(4 << 20, LIMIT);
        let large = vec![7u8; HASH_OFF_RUNTIME_BYTES + 1];
        deliver(&cache, &large, b"a").await;
        let forged = encode::attach(&large, &encode::by_digest(FUNCTION, b"a"));
        assert_eq!(
            cache
                .resolve(Request::parse(forged).unwrap())
                .await
                .unwrap_err(),
            GatewayError::FunctionMismatch
        );
    }

    #[tokio::test]
    async fn a_call_is_refused_if_its_function_would_take_it_past_the_payload_limit() {
        let function = vec![1u8; 600];
        let call_alone = encode::by_digest(&function, &[2u8; 300]).len();
        assert!(call_alone < 700);
        // The function is held (kept from a call resolved under a larger
        // limit): a call naming it by digest fits the limit alone, but not
        // with the function the gateway would attach for a worker.
        let cache = FunctionCache::new(1 << 20, 700);
        let call = deliver(&FunctionCache::new(1 << 20, LIMIT), &function, &[2u8; 300]).await;
        cache.keep(&call);
        let by_digest = Request::parse(encode::by_digest(&function, &[2u8; 300])).unwrap();
        assert!(matches!(
            cache.resolve(by_digest).await.unwrap_err(),
            GatewayError::PayloadTooLarge {
                direction: Direction::Request,
                limit: 700,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn the_least_recently_used_function_is_evicted_past_the_bound() {
        let size = FUNCTION.len() + ENTRY_OVERHEAD_BYTES;
        let cache = FunctionCache::new(2 * size, LIMIT);
        let functions: Vec<Vec<u8>> = (b'a'..=b'c')
            .map(|c| [FUNCTION, &[c][..]].concat()[1..].to_vec())
            .collect();
        for function in &functions[..2] {
            deliver(&cache, function, b"").await;
        }
        // The first is used again, so the second is the one to go.
        assert!(held(&cache, &functions[0]).await);
        deliver(&cache, &functions[2], b"").await;
        assert!(held(&cache, &functions[0]).await);
        assert!(!held(&cache, &functions[1]).await);
        assert!(held(&cache, &functions[2]).await);
        // A function larger than the whole bound still runs, but is not kept.
        let huge = vec![1u8; 3 * size];
        deliver(&cache, &huge, b"").await;
        assert!(!held(&cache, &huge).await);
    }

    #[tokio::test]
    async fn each_entry_costs_its_bookkeeping_too() {
        // Tiny "functions" cannot be kept beyond what the bound allows.
        let cache = FunctionCache::new(10 * ENTRY_OVERHEAD_BYTES, LIMIT);
        for i in 0u32..100 {
            deliver(&cache, &i.to_le_bytes(), b"").await;
        }
        assert!(cache.lock().entries.len() < 10);
    }

    #[test]
    fn workers_remember_a_bounded_number_of_functions() {
        let mut known = KnownFunctions::default();
        let digest = |i: usize| {
            let mut digest = [0u8; crate::wire::DIGEST_BYTES];
            digest[..8].copy_from_slice(&i.to_le_bytes());
            digest
        };
        for i in 0..=KNOWN_PER_WORKER {
            assert!(!known.knows(&digest(i)));
            known.learned(digest(i));
        }
        assert!(!known.knows(&digest(0)));
        assert!(known.knows(&digest(KNOWN_PER_WORKER)));
    }
}
