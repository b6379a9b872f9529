//! The layer and its builder.

use crate::caller::{self, CallerFn, CallerId, Rejection};
use crate::fingerprint::FingerprintSpec;
use crate::service::IdempotencyService;
use crate::waiters::Waiters;
use http::request::Parts;
use http::{HeaderName, Method, header};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tower_layer::Layer;

/// The request header carrying the client's key (the default name).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set to `true` on a replayed response.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// When the key's record expires, in unix seconds; on every stored or
/// replayed response.
pub const IDEMPOTENCY_EXPIRES: HeaderName = HeaderName::from_static("idempotency-expires");

/// Response headers that are never stored, even when listed in
/// [`IdempotencyLayer::store_headers`]: credentials and cookies (a replay
/// must not hand a session to whoever holds the key), hop-by-hop and
/// framing headers (they describe one connection, not the response), and
/// the layer's own.
pub const NEVER_STORED: [HeaderName; 16] = [
    header::SET_COOKIE,
    header::COOKIE,
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::WWW_AUTHENTICATE,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("set-cookie2"),
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::CONTENT_LENGTH,
    IDEMPOTENT_REPLAYED,
];

/// The default retention of a completed response: 24 hours.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// The default largest request body of an idempotent request: 1 MiB.
pub const DEFAULT_MAX_BODY_LEN: usize = 1 << 20;
/// The default largest response body stored: 1 MiB.
pub const DEFAULT_MAX_RESPONSE_LEN: usize = 1 << 20;
/// The default longest client key: 255 bytes, as Stripe allows.
pub const DEFAULT_MAX_KEY_LEN: usize = 255;
/// The default longest caller identity: 256 bytes.
pub const DEFAULT_MAX_CALLER_LEN: usize = 256;
/// The default most requests waiting on one key (with [`IdempotencyLayer::wait`]).
pub const DEFAULT_MAX_WAITERS_PER_KEY: usize = 64;
/// The default most requests waiting on all keys together.
pub const DEFAULT_MAX_WAITERS: usize = 1024;

/// Where in a request's life a backend call failed; passed to the
/// [`on_backend_error`](IdempotencyLayer::on_backend_error) hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendStage {
    /// Claiming the key; the client got 503 and the handler did not run.
    Claim,
    /// Storing the handler's response; the client got the response, without
    /// `Idempotency-Expires`, and a retry finds the key in progress until
    /// the lease ends.
    Complete,
    /// Releasing the key after a failure; a retry finds the key in progress
    /// until the lease ends.
    Release,
}

type ErrorHook = Arc<dyn Fn(BackendStage, &idemkv::Error) + Send + Sync>;

/// Everything the builder sets.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) methods: Vec<Method>,
    pub(crate) header_name: HeaderName,
    pub(crate) caller: CallerFn,
    pub(crate) fingerprint: FingerprintSpec,
    pub(crate) store_headers: Vec<HeaderName>,
    pub(crate) max_body_len: usize,
    pub(crate) max_response_len: usize,
    pub(crate) max_key_len: usize,
    pub(crate) max_caller_len: usize,
    pub(crate) wait: Option<Duration>,
    pub(crate) max_waiters_per_key: usize,
    pub(crate) max_waiters: usize,
    pub(crate) retention: Duration,
    pub(crate) release_on_server_error: bool,
    pub(crate) unavailable_retry_after: Duration,
    pub(crate) on_backend_error: Option<ErrorHook>,
}

/// What every service made by one layer shares.
pub(crate) struct Shared<B> {
    pub(crate) backend: Arc<B>,
    pub(crate) config: Config,
    pub(crate) waiters: Arc<Waiters>,
}

impl<B> Shared<B> {
    pub(crate) fn report(&self, stage: BackendStage, error: &idemkv::Error) {
        if let Some(hook) = &self.config.on_backend_error {
            hook(stage, error);
        }
    }
}

/// A [`tower_layer::Layer`] that makes the requests it covers idempotent
/// over the [`idemkv::Backend`] `B`; see the [crate docs](crate) for what it
/// answers when.
///
/// Built with [`new`](IdempotencyLayer::new) and the methods below, each of
/// which returns the changed layer. Cloning is cheap, and the services a
/// layer (or its clones) makes share the backend and the bound on waiters.
pub struct IdempotencyLayer<B> {
    shared: Arc<Shared<B>>,
}

impl<B> Clone for IdempotencyLayer<B> {
    fn clone(&self) -> Self {
        IdempotencyLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<B> fmt::Debug for IdempotencyLayer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.shared.config;
        f.debug_struct("IdempotencyLayer")
            .field("methods", &c.methods)
            .field("header_name", &c.header_name)
            .field("fingerprint", &c.fingerprint)
            .field("store_headers", &c.store_headers)
            .field("max_body_len", &c.max_body_len)
            .field("max_response_len", &c.max_response_len)
            .field("max_key_len", &c.max_key_len)
            .field("max_caller_len", &c.max_caller_len)
            .field("wait", &c.wait)
            .field("max_waiters_per_key", &c.max_waiters_per_key)
            .field("max_waiters", &c.max_waiters)
            .field("retention", &c.retention)
            .field("release_on_server_error", &c.release_on_server_error)
            .field("unavailable_retry_after", &c.unavailable_retry_after)
            .finish_non_exhaustive()
    }
}

impl<B> IdempotencyLayer<B> {
    /// A layer over `backend` with the defaults: POST and PATCH,
    /// `Idempotency-Key`, the caller from the request's [`CallerId`]
    /// extension (401 without one), fingerprint of method, path and body,
    /// `content-type` and `location` stored, 1 MiB bodies each way, keys up
    /// to 255 bytes, no waiting (409 while in progress), 24 h retention,
    /// a 5xx releases the key.
    pub fn new(backend: B) -> Self {
        let config = Config {
            methods: vec![Method::POST, Method::PATCH],
            header_name: IDEMPOTENCY_KEY,
            caller: Arc::new(caller::from_extensions),
            fingerprint: FingerprintSpec::default(),
            store_headers: vec![header::CONTENT_TYPE, header::LOCATION],
            max_body_len: DEFAULT_MAX_BODY_LEN,
            max_response_len: DEFAULT_MAX_RESPONSE_LEN,
            max_key_len: DEFAULT_MAX_KEY_LEN,
            max_caller_len: DEFAULT_MAX_CALLER_LEN,
            wait: None,
            max_waiters_per_key: DEFAULT_MAX_WAITERS_PER_KEY,
            max_waiters: DEFAULT_MAX_WAITERS,
            retention: DEFAULT_RETENTION,
            release_on_server_error: true,
            unavailable_retry_after: Duration::from_secs(1),
            on_backend_error: None,
        };
        IdempotencyLayer {
            shared: Arc::new(Shared {
                backend: Arc::new(backend),
                waiters: Arc::new(Waiters::new(config.max_waiters_per_key, config.max_waiters)),
                config,
            }),
        }
    }

    fn configure(self, change: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.shared.config.clone();
        change(&mut config);
        IdempotencyLayer {
            shared: Arc::new(Shared {
                backend: Arc::clone(&self.shared.backend),
                waiters: Arc::new(Waiters::new(config.max_waiters_per_key, config.max_waiters)),
                config,
            }),
        }
    }

    /// The methods whose requests must carry a key; others pass through
    /// untouched, body and all. Default: POST and PATCH.
    pub fn methods(self, methods: impl IntoIterator<Item = Method>) -> Self {
        let methods = methods.into_iter().collect();
        self.configure(|c| c.methods = methods)
    }

    /// The request header carrying the key. Default: `Idempotency-Key`.
    pub fn header_name(self, name: HeaderName) -> Self {
        self.configure(|c| c.header_name = name)
    }

    /// How the caller of a request is named: `caller(&parts)` returns the
    /// identity that scopes the key, or a [`Rejection`] the client gets
    /// instead (nothing is claimed, the handler does not run).
    ///
    /// Default: the [`CallerId`] an authentication layer put in the
    /// request's extensions, and 401 when there is none, so a layer that was
    /// not told who the caller is fails closed instead of letting callers
    /// share keys. A single-tenant service can say so explicitly with
    /// `.caller(|_| Ok::<_, Rejection>("all"))`.
    ///
    /// An identity longer than [`max_caller_len`](Self::max_caller_len)
    /// is refused with 400: it may come from a header the client controls.
    pub fn caller<F, C>(self, caller: F) -> Self
    where
        F: Fn(&Parts) -> Result<C, Rejection> + Send + Sync + 'static,
        C: Into<CallerId>,
    {
        let caller: CallerFn = Arc::new(move |parts: &Parts| caller(parts).map(Into::into));
        self.configure(|c| c.caller = caller)
    }

    /// Which request parts enter the fingerprint. Default: method, path and
    /// body.
    pub fn fingerprint(self, spec: FingerprintSpec) -> Self {
        self.configure(|c| c.fingerprint = spec)
    }

    /// The response headers stored with the status and body and replayed to
    /// retries. Default: `content-type`, `location`. Headers in
    /// [`NEVER_STORED`] (`set-cookie`, `authorization`, hop-by-hop headers,
    /// ...) are left out even when listed here; [`stored_headers`](Self::stored_headers)
    /// shows the list in force.
    pub fn store_headers(self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        let mut kept: Vec<HeaderName> = Vec::new();
        for name in names {
            if !NEVER_STORED.contains(&name) && name != IDEMPOTENCY_EXPIRES && !kept.contains(&name)
            {
                kept.push(name);
            }
        }
        self.configure(|c| c.store_headers = kept)
    }

    /// The largest request body an idempotent request may have; a larger one
    /// (by `Content-Length` or as it streams in) gets 413 before anything is
    /// claimed. The body is buffered to fingerprint it. Default: 1 MiB.
    pub fn max_body_len(self, bytes: usize) -> Self {
        self.configure(|c| c.max_body_len = bytes)
    }

    /// The largest response body stored. The handler has run by the time a
    /// larger body shows, so its response cannot be replayed: the key is
    /// completed with a 500 problem instead (that the client gets too), so
    /// that retries do not run the side effect again. The backend's own
    /// limit ([`idemkv::Backend::max_response_len`], on the encoded
    /// response) applies as well. Default: 1 MiB.
    pub fn max_response_len(self, bytes: usize) -> Self {
        self.configure(|c| c.max_response_len = bytes)
    }

    /// The longest key a client may send, in bytes (after removing the
    /// draft's optional quotes); longer keys, and header values longer than
    /// this plus the two quotes, get 400. Default: 255.
    pub fn max_key_len(self, bytes: usize) -> Self {
        self.configure(|c| c.max_key_len = bytes)
    }

    /// The longest caller identity, in bytes; a longer one gets 400.
    /// Default: 256.
    pub fn max_caller_len(self, bytes: usize) -> Self {
        self.configure(|c| c.max_caller_len = bytes)
    }

    /// `None` (the default): a retry that arrives while the first request
    /// runs gets 409 with `Retry-After`. `Some(d)`: it waits up to `d` for
    /// the first request's answer and replays it (or runs, if the first one
    /// released the key); 409 only if `d` passes first. Waiters are bounded
    /// by [`max_waiters`](Self::max_waiters); a request beyond the bound is
    /// answered at once, as without waiting.
    pub fn wait(self, wait: Option<Duration>) -> Self {
        self.configure(|c| c.wait = wait)
    }

    /// The most requests that wait on one key, and on all keys together.
    /// Defaults: 64 and 1024.
    pub fn max_waiters(self, per_key: usize, total: usize) -> Self {
        self.configure(|c| {
            c.max_waiters_per_key = per_key;
            c.max_waiters = total;
        })
    }

    /// How long a completed response is replayed. Default: 24 h.
    pub fn retention(self, retention: Duration) -> Self {
        self.configure(|c| c.retention = retention)
    }

    /// When the handler answers 5xx, panics, or fails without a response:
    /// `true` (the default) releases the key, so the client's retry runs the
    /// handler again; `false` stores the answer (a 500 problem for a panic)
    /// and replays it like any other.
    pub fn release_on_server_error(self, release: bool) -> Self {
        self.configure(|c| c.release_on_server_error = release)
    }

    /// The `Retry-After` of a 503 answered when the backend fails (rounded
    /// up to whole seconds, at least 1). Default: 1 s.
    pub fn unavailable_retry_after(self, after: Duration) -> Self {
        self.configure(|c| c.unavailable_retry_after = after)
    }

    /// Called with every backend error, for logs and metrics; the client's
    /// answers never include the error's text.
    pub fn on_backend_error<F>(self, hook: F) -> Self
    where
        F: Fn(BackendStage, &idemkv::Error) + Send + Sync + 'static,
    {
        let hook: ErrorHook = Arc::new(hook);
        self.configure(|c| c.on_backend_error = Some(hook))
    }

    /// The response headers stored, as configured less [`NEVER_STORED`].
    pub fn stored_headers(&self) -> &[HeaderName] {
        &self.shared.config.store_headers
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.shared.backend
    }

    /// How many requests wait on a key now (see [`wait`](Self::wait)).
    pub fn waiting(&self) -> usize {
        self.shared.waiters.waiting()
    }
}

impl<S, B> Layer<S> for IdempotencyLayer<B> {
    type Service = IdempotencyService<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService::new(inner, Arc::clone(&self.shared))
    }
}
