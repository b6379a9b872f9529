//! An `Idempotency-Key` middleware for axum, backed by an idemkv [`Store`].
//!
//! Wire it onto the routes whose requests must carry a key:
//!
//! ```text
//! Router::new()
//!     .route("/v1/orders", post(create_order))
//!     .route_layer(middleware::from_fn_with_state(
//!         Idempotency::new(store, IdempotencyConfig::default()),
//!         idempotency::layer,
//!     ))
//! ```
//!
//! For each request whose method is in [`IdempotencyConfig::methods`]:
//!
//! | situation | answer |
//! |---|---|
//! | no `Idempotency-Key` header (or an unusable one) | 400, a JSON problem body |
//! | request body over [`IdempotencyConfig::max_body_len`] | 413 |
//! | first request with this key | the handler runs; its response is stored |
//! | the handler answers 5xx | the key is released, so a retry runs the handler again (see [`IdempotencyConfig::release_on_server_error`]) |
//! | a retry of a completed request | the stored status, headers and body, plus `Idempotent-Replayed: true` |
//! | the same key on the same route with another query or body | 422 |
//! | the first request is still running | 409 with `Retry-After`, or, with [`IdempotencyConfig::wait`], the retry waits for its answer |
//!
//! **Identity.** A key is scoped by the caller, the route and the client's
//! key, with [`idemkv::scoped_key`], so one client can never replay
//! another's response. This example's notion of the caller: the
//! `Authorization` header if present (its digest, so credentials are never
//! written to disk), else the `X-Tenant` header, else `anonymous`. A real
//! server uses the principal its authentication layer established.
//!
//! **Fingerprint.** [`Fingerprint::of_parts`] over the method, the path and
//! query, and the body bytes: the parts a retry must repeat exactly.
//!
//! **Lifetime.** Both the first response and every replay carry
//! `Idempotency-Expires: <unix seconds>`, the time after which the store
//! forgets the key and a request with it runs afresh. On a replay it is the
//! record's own expiry; on the first response it is computed from
//! [`IdempotencyConfig::retention`] just before the response is stored, so
//! it may be up to a second earlier than the record's, never later.
//!
//! **Stored responses** are encoded by [`encode_response`]; only the headers
//! named in [`IdempotencyConfig::replay_headers`] are kept.

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use idemkv::{Claim, Completed, Fingerprint, Store, Ticket, scoped_key};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The request header carrying the client's key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set to `true` on a replayed response.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// When the key's record expires, in unix seconds.
pub const IDEMPOTENCY_EXPIRES: HeaderName = HeaderName::from_static("idempotency-expires");
/// The example's caller identity when there is no `Authorization` header.
pub const X_TENANT: HeaderName = HeaderName::from_static("x-tenant");

/// The longest client key accepted, in bytes.
pub const MAX_CLIENT_KEY_LEN: usize = 255;
/// The longest `X-Tenant` value accepted, in bytes.
pub const MAX_TENANT_LEN: usize = 128;

/// How the middleware behaves.
#[derive(Debug, Clone)]
pub struct IdempotencyConfig {
    /// Methods whose requests must carry an `Idempotency-Key`; others pass
    /// through untouched. Default: POST and PATCH.
    pub methods: Vec<Method>,
    /// `None` (the default): a retry that arrives while the first request
    /// still runs gets 409 with `Retry-After`. `Some(d)`: it waits up to
    /// `d` for the first request's answer and replays it (409 only if `d`
    /// passes first).
    pub wait: Option<Duration>,
    /// When the handler answers 5xx: `true` (the default) releases the key,
    /// so the client's retry runs the handler again; `false` stores the
    /// 5xx and replays it like any other answer.
    pub release_on_server_error: bool,
    /// How long a completed response is replayed. Default: 24 h.
    pub retention: Duration,
    /// The largest request body buffered for the fingerprint. Default: 1 MiB.
    pub max_body_len: usize,
    /// The response headers stored and replayed with the status and body.
    /// Default: `content-type`, `location`.
    pub replay_headers: Vec<HeaderName>,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            methods: vec![Method::POST, Method::PATCH],
            wait: None,
            release_on_server_error: true,
            retention: Duration::from_secs(24 * 3600),
            max_body_len: 1 << 20,
            replay_headers: vec![header::CONTENT_TYPE, header::LOCATION],
        }
    }
}

/// The middleware's state: the store and the configuration. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Idempotency {
    store: Store,
    config: Arc<IdempotencyConfig>,
}

impl Idempotency {
    /// The middleware state for `store`, configured by `config`.
    pub fn new(store: Store, config: IdempotencyConfig) -> Self {
        Idempotency {
            store,
            config: Arc::new(config),
        }
    }
}

/// The middleware, for `axum::middleware::from_fn_with_state`.
pub async fn layer(State(idem): State<Idempotency>, request: Request, next: Next) -> Response {
    if !idem.config.methods.contains(request.method()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let client_key = match client_key(&parts.headers) {
        Ok(key) => key,
        Err(refusal) => return refusal.into_response(),
    };
    let tenant = match tenant(&parts.headers) {
        Ok(tenant) => tenant,
        Err(refusal) => return refusal.into_response(),
    };
    let body = match to_bytes(body, idem.config.max_body_len).await {
        Ok(body) => body,
        Err(e) => return body_refused(e, idem.config.max_body_len).into_response(),
    };

    let route = format!("{} {}", parts.method, parts.uri.path());
    let key = scoped_key([tenant.as_bytes(), route.as_bytes(), client_key.as_bytes()]);
    let target = parts.uri.path_and_query().map_or("", |pq| pq.as_str());
    let fingerprint =
        Fingerprint::of_parts(&[parts.method.as_str().as_bytes(), target.as_bytes(), &body]);

    let claim = match idem.config.wait {
        Some(timeout) => {
            idem.store
                .claim_wait_async(&key, fingerprint, timeout)
                .await
        }
        None => idem.store.claim_async(&key, fingerprint).await,
    };
    match claim {
        Ok(Claim::Acquired(ticket)) => {
            let request = Request::from_parts(parts, Body::from(body));
            // On its own task: if the client hangs up, the handler still
            // finishes and its response is still stored for the retry.
            match tokio::spawn(idem.run_and_store(ticket, request, next)).await {
                Ok(response) => response,
                Err(_) => problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Handler failed",
                    "the handler panicked; the key stays claimed until its lease ends",
                ),
            }
        }
        Ok(Claim::Replay(done)) => replay(&done),
        Ok(Claim::InProgress {
            lease_expires_at_ms,
        }) => in_progress(lease_expires_at_ms),
        Ok(Claim::Mismatch) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Idempotency-Key reused",
            "this Idempotency-Key was used with a different request; use a new key",
        ),
        Err(e) => {
            let mut response = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Idempotency store unavailable",
                e.to_string(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            response
        }
    }
}

impl Idempotency {
    /// Runs the handler for a claimed key, then stores its response (or
    /// releases the key after a 5xx, if so configured).
    async fn run_and_store(self, ticket: Ticket, request: Request, next: Next) -> Response {
        let response = next.run(request).await;
        let (mut parts, body) = response.into_parts();
        if parts.status.is_server_error() && self.config.release_on_server_error {
            if let Err(e) = self.store.release_async(ticket).await {
                eprintln!("idempotency: could not release a key after a server error: {e}");
            }
            return Response::from_parts(parts, body);
        }
        let body = match to_bytes(body, usize::MAX).await {
            Ok(body) => body,
            Err(e) => {
                // The side effect may have happened: keep the key claimed
                // (until its lease ends) rather than invite a second run.
                drop(ticket);
                return problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Response unreadable",
                    e.to_string(),
                );
            }
        };
        let kept = parts
            .headers
            .iter()
            .filter(|(name, _)| self.config.replay_headers.contains(name));
        let expires_s = now_ms().saturating_add(duration_ms(self.config.retention)) / 1000;
        let stored = match encode_response(parts.status, kept, &body) {
            Ok(stored) => stored,
            Err(why) => {
                drop(ticket);
                eprintln!("idempotency: response not stored: {why}");
                return Response::from_parts(parts, Body::from(body));
            }
        };
        match self
            .store
            .complete_with_retention_async(ticket, stored, self.config.retention)
            .await
        {
            Ok(()) => {
                parts
                    .headers
                    .insert(IDEMPOTENCY_EXPIRES, HeaderValue::from(expires_s));
            }
            // The client still gets its answer; a retry finds the key in
            // progress until the lease ends, then runs again.
            Err(e) => eprintln!("idempotency: response not stored: {e}"),
        }
        Response::from_parts(parts, Body::from(body))
    }
}

/// A request refused before anything is claimed: status, title, detail.
struct Refusal(StatusCode, &'static str, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        problem(self.0, self.1, self.2)
    }
}

/// The client's key: the header's value, with the quotes of the draft's
/// structured-field form (`"abc"`) removed if present.
fn client_key(headers: &HeaderMap) -> Result<&str, Refusal> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key missing",
            "this request requires an Idempotency-Key header".to_owned(),
        ));
    };
    let key = value.to_str().unwrap_or("").trim();
    let key = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(key);
    if key.is_empty() || key.len() > MAX_CLIENT_KEY_LEN {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key invalid",
            format!("an Idempotency-Key is 1 to {MAX_CLIENT_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(key)
}

/// The caller's identity; see the module docs.
fn tenant(headers: &HeaderMap) -> Result<String, Refusal> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let digest = Fingerprint::of(auth.as_bytes()).as_u128();
        return Ok(format!("auth:{digest:032x}"));
    }
    match headers.get(&X_TENANT) {
        Some(t) if !t.is_empty() && t.len() <= MAX_TENANT_LEN => {
            Ok(format!("tenant:{}", String::from_utf8_lossy(t.as_bytes())))
        }
        Some(_) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            "X-Tenant invalid",
            format!("X-Tenant is 1 to {MAX_TENANT_LEN} bytes"),
        )),
        None => Ok("anonymous".to_owned()),
    }
}

fn body_refused(e: axum::Error, limit: usize) -> Refusal {
    let too_large =
        std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
    if too_large {
        Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large",
            format!("an idempotent request body is at most {limit} bytes"),
        )
    } else {
        Refusal(
            StatusCode::BAD_REQUEST,
            "Request body unreadable",
            e.to_string(),
        )
    }
}

fn replay(done: &Completed) -> Response {
    let Some(stored) = decode_response(done.response()) else {
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Stored response unreadable",
            "the stored response for this key could not be decoded",
        );
    };
    let mut response = stored.into_response();
    let headers = response.headers_mut();
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    headers.insert(
        IDEMPOTENCY_EXPIRES,
        HeaderValue::from(done.expires_at_ms() / 1000),
    );
    response
}

fn in_progress(lease_expires_at_ms: u64) -> Response {
    let retry_after_s = lease_expires_at_ms
        .saturating_sub(now_ms())
        .div_ceil(1000)
        .max(1);
    let mut response = problem(
        StatusCode::CONFLICT,
        "Request in progress",
        "a request with this Idempotency-Key is still being processed; retry later",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    response
}

/// An RFC 9457 problem response.
pub fn problem(status: StatusCode, title: &str, detail: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, duration_ms)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The version byte that starts every stored response.
pub const STORED_RESPONSE_VERSION: u8 = 1;

/// A response as stored for replay: status, kept headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The status code.
    pub status: StatusCode,
    /// The kept headers, in their original order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body, byte for byte.
    pub body: Bytes,
}

impl IntoResponse for StoredResponse {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        response
    }
}

/// Encodes a response for the store. All integers are big-endian:
///
/// ```text
/// u8  version (1)
/// u16 status
/// u16 header count
///     per header: u16 name length, name bytes, u16 value length, value bytes
/// u32 body length, body bytes
/// ```
///
/// Fails if there are more than 65,535 headers, a name or value is longer
/// than 65,535 bytes, or the body is 4 GiB or more.
pub fn encode_response<'a>(
    status: StatusCode,
    headers: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    body: &[u8],
) -> Result<Vec<u8>, &'static str> {
    let headers: Vec<_> = headers.into_iter().collect();
    let mut out = Vec::with_capacity(9 + body.len());
    out.push(STORED_RESPONSE_VERSION);
    out.extend_from_slice(&status.as_u16().to_be_bytes());
    let count = u16::try_from(headers.len()).map_err(|_| "too many headers")?;
    out.extend_from_slice(&count.to_be_bytes());
    for (name, value) in headers {
        for part in [name.as_str().as_bytes(), value.as_bytes()] {
            let len = u16::try_from(part.len()).map_err(|_| "header too long")?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    let len = u32::try_from(body.len()).map_err(|_| "body too long")?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Decodes what [`encode_response`] wrote; `None` if the bytes are not
/// exactly one such response (wrong version, truncated, trailing bytes,
/// invalid status or header).
pub fn decode_response(bytes: &[u8]) -> Option<StoredResponse> {
    let mut r = Reader(bytes);
    if r.take(1)? != [STORED_RESPONSE_VERSION] {
        return None;
    }
    let status = StatusCode::from_u16(r.u16()?).ok()?;
    let count = r.u16()?;
    let mut headers = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = r.u16()?;
        let name = HeaderName::from_bytes(r.take(usize::from(len))?).ok()?;
        let len = r.u16()?;
        let value = HeaderValue::from_bytes(r.take(usize::from(len))?).ok()?;
        headers.push((name, value));
    }
    let len = usize::try_from(r.u32()?).ok()?;
    let body = Bytes::copy_from_slice(r.take(len)?);
    r.0.is_empty().then_some(StoredResponse {
        status,
        headers,
        body,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}
