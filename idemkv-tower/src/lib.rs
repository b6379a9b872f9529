//! `Idempotency-Key` for tower, axum and hyper servers, over any
//! [`idemkv::Backend`]: the embedded [`idemkv::Store`] or a shared engine.
//!
//! ```
//! use axum::{Router, routing::post};
//! use idemkv_tower::{IdempotencyLayer, Rejection};
//!
//! async fn create_order(body: String) -> (http::StatusCode, String) {
//!     (http::StatusCode::CREATED, format!("order for {body}")) // the side effect
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let dir = dir.path();
//! let store = idemkv::Store::open(dir)?;
//! let idempotency = IdempotencyLayer::new(store).caller(|parts| {
//!     // Your authenticated principal; here a header, for the example.
//!     match parts.headers.get("x-tenant") {
//!         Some(tenant) => Ok(tenant.as_bytes().to_vec()),
//!         None => Err(Rejection::unauthorized("who are you?")),
//!     }
//! });
//! let app = Router::new()
//!     .route("/v1/orders", post(create_order))
//!     .layer(idempotency);
//! # use http_body_util::BodyExt;
//! # use tower::ServiceExt;
//! # let order = || {
//! #     http::Request::post("/v1/orders")
//! #         .header("idempotency-key", "k-1")
//! #         .header("x-tenant", "acme")
//! #         .body(axum::body::Body::from("a book"))
//! #         .unwrap()
//! # };
//! # let first = app.clone().oneshot(order()).await?;
//! # let retry = app.clone().oneshot(order()).await?;
//! # assert_eq!(first.status(), 201);
//! # assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! # let first = first.into_body().collect().await?.to_bytes();
//! # let retry = retry.into_body().collect().await?.to_bytes();
//! # assert_eq!(first, retry);
//! # Ok(())
//! # }
//! ```
//!
//! A POST to `/v1/orders` must now carry an `Idempotency-Key`; its first
//! request runs the handler and its response is stored, and every retry with
//! the same key and the same request gets that response again, byte for
//! byte, without running the handler.
//!
//! ## What the layer answers
//! For each request whose method is covered (default POST and PATCH; others
//! pass through untouched):
//!
//! | situation | answer |
//! |---|---|
//! | no key header, several, an empty key, or a key over [`max_key_len`](IdempotencyLayer::max_key_len) | 400 |
//! | the caller cannot be named ([`caller`](IdempotencyLayer::caller)) | the caller function's refusal; 401 by default |
//! | body over [`max_body_len`](IdempotencyLayer::max_body_len) | 413, before anything is claimed |
//! | the backend fails (unreachable, timed out, not durable, poisoned, I/O) | 503 with `Retry-After`; the handler does not run |
//! | first request with this key | the handler runs; its status, [stored headers](IdempotencyLayer::store_headers) and body are stored; the answer carries `Idempotency-Expires` |
//! | the handler answers 5xx, panics or fails | the key is released, so the retry runs again ([configurable](IdempotencyLayer::release_on_server_error)) |
//! | a retry of a completed request | the stored response, plus `Idempotent-Replayed: true` and `Idempotency-Expires` |
//! | the same key with another request ([fingerprint](IdempotencyLayer::fingerprint)) | 422 |
//! | the first request is still running | 409 with `Retry-After`, or the retry [waits](IdempotencyLayer::wait) for its answer |
//!
//! Refusals are RFC 9457 problems (`application/problem+json`). None of them
//! contains a backend's error text: pass a hook to
//! [`on_backend_error`](IdempotencyLayer::on_backend_error) to log those.
//!
//! ## Keys
//! The stored key is [`idemkv::scoped_key`]`([caller, "METHOD /path",
//! client key])`: a key is the caller's own, and the same key on two routes
//! names two operations. The caller comes from
//! [`caller`](IdempotencyLayer::caller); by default it is the [`CallerId`]
//! an authentication layer inserted into the request's extensions, and a
//! request without one is refused (401): the layer never lets callers
//! share keys by default. Paths over 256 bytes enter the key as their
//! 128-bit digest.
//!
//! ## Bounds
//! Every input a client controls is bounded: the key (255 bytes) and its
//! header (the key plus two quotes, one header per request), the caller's
//! identity (256 bytes), the request body (1 MiB, buffered to fingerprint
//! it), and the requests waiting on one key (64) and on all keys (1024),
//! beyond which a request is answered at once instead of waiting. The
//! handler's response is bounded too (1 MiB, and the backend's limit).
//!
//! ## Tasks
//! The claim, the handler and the completion of an idempotent request run
//! on a tokio task of their own ([`tokio::spawn`]): a client that hangs up
//! while its request runs does not cancel it half way, so the claim is
//! completed (or released) and its retry is replayed. This needs a tokio
//! runtime, and inner services, futures and bodies that are `Send` and
//! `'static`, as axum's and hyper's are.
//!
//! ## Stored responses
//! A [`StoredResponse`] in a small versioned, length-prefixed encoding:
//! the status, the headers in [`store_headers`](IdempotencyLayer::store_headers)
//! (never those in [`NEVER_STORED`], such as `set-cookie`) and the body.
//!
//! ## Features
//! `test-support` adds the module `test_support`: the end-to-end scenarios
//! over real TCP (an axum server, a hyper client), generic over the
//! backend, and the macro `e2e_tests!` that runs them all from a backend's
//! own test file.

mod body;
mod caller;
mod fingerprint;
mod layer;
mod respond;
mod service;
mod stored;
mod waiters;

#[cfg(feature = "test-support")]
pub mod test_support;

pub use body::{RequestBody, ResponseBody};
pub use caller::{CallerId, Rejection};
pub use fingerprint::FingerprintSpec;
pub use layer::{
    BackendStage, DEFAULT_MAX_BODY_LEN, DEFAULT_MAX_CALLER_LEN, DEFAULT_MAX_KEY_LEN,
    DEFAULT_MAX_RESPONSE_LEN, DEFAULT_MAX_WAITERS, DEFAULT_MAX_WAITERS_PER_KEY, DEFAULT_RETENTION,
    IDEMPOTENCY_EXPIRES, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, IdempotencyLayer, NEVER_STORED,
};
pub use service::{IdempotencyService, ResponseFuture};
pub use stored::{EncodingError, STORED_RESPONSE_VERSION, StoredResponse};
