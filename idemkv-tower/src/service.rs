//! The service: what happens to one request.

use crate::body::{RequestBody, ResponseBody};
use crate::caller::Rejection;
use crate::layer::{BackendStage, IDEMPOTENCY_EXPIRES, IDEMPOTENT_REPLAYED, Shared};
use crate::respond::{problem, refusal, with_retry_after};
use crate::stored::{StoredResponse, encode_parts};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use idemkv::{Backend, Claim, Completed, Error, Fingerprint, scoped_key};
use pin_project_lite::pin_project;
use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};
use tower_service::Service;

/// Paths longer than this enter the key as their digest.
const MAX_PATH_IN_KEY: usize = 256;

/// The errors a body may fail with, boxed.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The future an [`IdempotencyService`] returns.
pub type ResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// The [`tower_service::Service`] an [`IdempotencyLayer`](crate::IdempotencyLayer)
/// wraps around an inner service `S`, over backend `B`.
///
/// It takes `http::Request<ReqBody>` and hands the inner service
/// `http::Request<RequestBody<ReqBody>>`; it returns
/// `http::Response<ResponseBody<ResBody>>`, where `ResBody` is the inner
/// service's response body. An idempotent request's claim, handler and
/// completion run on a tokio task of their own, so this service needs a
/// tokio runtime and `Send + 'static` inner services, futures and bodies.
pub struct IdempotencyService<S, B> {
    inner: S,
    shared: Arc<Shared<B>>,
}

impl<S, B> IdempotencyService<S, B> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<B>>) -> Self {
        IdempotencyService { inner, shared }
    }
}

impl<S: Clone, B> Clone for IdempotencyService<S, B> {
    fn clone(&self) -> Self {
        IdempotencyService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, B> fmt::Debug for IdempotencyService<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B, ReqBody, ResBody> Service<Request<ReqBody>> for IdempotencyService<S, B>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Backend + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if !self.shared.config.methods.contains(request.method()) {
            let future = self.inner.call(request.map(RequestBody::inner));
            return Box::pin(async move { Ok(future.await?.map(ResponseBody::inner)) });
        }
        // The service that was polled ready goes with the request; this one
        // keeps a clone for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(idempotent(Arc::clone(&self.shared), inner, request))
    }
}

/// An idempotent request up to the claim: refusals that need no backend,
/// then the claim and the rest on a task of their own.
async fn idempotent<S, B, ReqBody, ResBody>(
    shared: Arc<Shared<B>>,
    inner: S,
    request: Request<ReqBody>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Backend + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let key = match scoped(&shared, &parts) {
        Ok(key) => key,
        Err(rejection) => return Ok(refusal(&rejection)),
    };
    let body = match read_body(body, &parts, shared.config.max_body_len).await {
        Ok(body) => body,
        Err(rejection) => return Ok(refusal(&rejection)),
    };
    let fingerprint = shared.config.fingerprint.fingerprint(&parts, &body);
    let request = Request::from_parts(parts, RequestBody::full(body));
    // On a task of its own: a client that hangs up drops this future, but
    // never a claim without its owner, nor a handler half way.
    let task = tokio::spawn(claim_and_run(shared, inner, key, fingerprint, request));
    match task.await {
        Ok(answer) => answer,
        Err(_) => Ok(problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Request failed",
            "the idempotency layer failed while handling this request",
        )),
    }
}

/// The scoped key: caller, method and path, client key.
fn scoped(shared: &Shared<impl Sized>, parts: &Parts) -> Result<Vec<u8>, Rejection> {
    let config = &shared.config;
    let client_key = client_key(parts, config)?;
    let caller = (config.caller)(parts)?;
    if caller.as_bytes().is_empty() || caller.as_bytes().len() > config.max_caller_len {
        return Err(Rejection::bad_request(format!(
            "the caller's identity is 1 to {} bytes",
            config.max_caller_len
        )));
    }
    let path = parts.uri.path();
    let route = if path.len() <= MAX_PATH_IN_KEY {
        format!("{} {path}", parts.method)
    } else {
        // Paths start with '/', so a digest cannot meet a literal path.
        let digest = Fingerprint::of(path.as_bytes()).as_u128();
        format!("{} #{digest:032x}", parts.method)
    };
    Ok(scoped_key([
        caller.as_bytes(),
        route.as_bytes(),
        client_key.as_bytes(),
    ]))
}

/// The client's key: the header's value, without the quotes of the draft's
/// structured-field form (`"abc"`) if present.
fn client_key<'a>(parts: &'a Parts, config: &crate::layer::Config) -> Result<&'a str, Rejection> {
    let name = &title_case(config.header_name.as_str());
    let invalid =
        |detail: String| Rejection::new(StatusCode::BAD_REQUEST, format!("{name} invalid"), detail);
    let mut values = parts.headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            format!("{name} missing"),
            format!("this request requires an {name} header"),
        ));
    };
    if values.next().is_some() {
        return Err(invalid(format!("send one {name} header, not several")));
    }
    let max = config.max_key_len;
    if value.len() > max.saturating_add(2) {
        return Err(invalid(format!(
            "the {name} header is {} bytes; a key is at most {max}",
            value.len()
        )));
    }
    let key = value.to_str().unwrap_or("").trim();
    let key = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(key);
    if key.is_empty() || key.len() > max {
        return Err(invalid(format!(
            "an {name} is 1 to {max} visible ASCII characters"
        )));
    }
    Ok(key)
}

/// `idempotency-key` as `Idempotency-Key`, for messages.
fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

/// The request body, buffered, or a 413 / 400 refusal.
async fn read_body<ReqBody>(body: ReqBody, parts: &Parts, limit: usize) -> Result<Bytes, Rejection>
where
    ReqBody: Body<Data = Bytes>,
    ReqBody::Error: Into<BoxError>,
{
    let too_large = || {
        Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large",
            format!("an idempotent request body is at most {limit} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(_) => Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "Request body unreadable",
            "the request body could not be read",
        )),
    }
}

/// Claims the key (waiting, if so configured and a place is free) and
/// answers from the claim.
async fn claim_and_run<S, B, ReqBody, ResBody>(
    shared: Arc<Shared<B>>,
    inner: S,
    key: Vec<u8>,
    fingerprint: Fingerprint,
    request: Request<RequestBody<ReqBody>>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    B: Backend,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let backend = &*shared.backend;
    let claim = match shared.config.wait {
        Some(timeout) if !timeout.is_zero() => match shared.waiters.try_acquire(&key) {
            Some(_permit) => backend.claim_wait(&key, fingerprint, timeout).await,
            None => backend.claim(&key, fingerprint).await,
        },
        _ => backend.claim(&key, fingerprint).await,
    };
    match claim {
        Ok(Claim::Acquired(ticket)) => run(&shared, inner, ticket, request).await,
        Ok(Claim::Replay(done)) => Ok(replay(&done)),
        Ok(Claim::InProgress {
            lease_expires_at_ms,
        }) => {
            let secs = lease_expires_at_ms
                .saturating_sub(now_ms())
                .div_ceil(1000)
                .clamp(1, 3600);
            Ok(with_retry_after(
                problem(
                    StatusCode::CONFLICT,
                    "Request in progress",
                    "a request with this Idempotency-Key is still being processed; retry later",
                ),
                secs,
            ))
        }
        Ok(Claim::Mismatch) => Ok(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Idempotency-Key reused",
            "this Idempotency-Key was used with a different request; use a new key",
        )),
        Err(Error::KeyTooLong { .. } | Error::EmptyKey) => Ok(problem(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key invalid",
            "the key, with the caller and route it is scoped by, is too long for the store",
        )),
        Err(e) => {
            shared.report(BackendStage::Claim, &e);
            let secs = shared.config.unavailable_retry_after.as_millis();
            let secs = u64::try_from(secs.div_ceil(1000))
                .unwrap_or(u64::MAX)
                .max(1);
            Ok(with_retry_after(
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Idempotency store unavailable",
                    "the request could not be recorded, so it was not run; retry later",
                ),
                secs,
            ))
        }
    }
}

/// What the handler left, read inside the panic guard.
enum Handled<ResBody, E> {
    /// A response to store, its body read.
    Complete(http::response::Parts, Bytes),
    /// A 5xx to release the key for, its body not read.
    Released(Response<ResBody>),
    /// The body is over the limit.
    TooLarge,
    /// The body failed as it was read.
    BodyFailed,
    /// The inner service returned an error.
    Failed(E),
}

/// Runs the handler for a claimed key, then stores its response or
/// releases the key.
async fn run<S, B, ReqBody, ResBody>(
    shared: &Shared<B>,
    mut inner: S,
    ticket: B::Ticket,
    request: Request<RequestBody<ReqBody>>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    B: Backend,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let config = &shared.config;
    let limit = config.max_response_len;
    let handled = CatchUnwind {
        inner: async move {
            let response = match inner.call(request).await {
                Ok(response) => response,
                Err(e) => return Handled::Failed(e),
            };
            if response.status().is_server_error() && config.release_on_server_error {
                return Handled::Released(response);
            }
            let (parts, body) = response.into_parts();
            match Limited::new(body, limit).collect().await {
                Ok(collected) => Handled::Complete(parts, collected.to_bytes()),
                Err(e) if e.is::<LengthLimitError>() => Handled::TooLarge,
                Err(_) => Handled::BodyFailed,
            }
        },
    }
    .await;
    let failure = match handled {
        Ok(Handled::Complete(parts, body)) => return Ok(store(shared, ticket, parts, body).await),
        Ok(Handled::Released(response)) => {
            release(shared, ticket).await;
            return Ok(response.map(ResponseBody::inner));
        }
        Ok(Handled::TooLarge) => return Ok(store_too_large(shared, ticket).await),
        Ok(Handled::BodyFailed) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Response failed",
            "the response body failed while it was produced",
        ),
        Ok(Handled::Failed(e)) => {
            let failure = problem::<ResBody>(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Request failed",
                "the request failed without a response",
            );
            release_or_store(shared, ticket, failure).await;
            return Err(e);
        }
        Err(_panic) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Request failed",
            "the handler failed while processing this request",
        ),
    };
    Ok(release_or_store(shared, ticket, failure).await)
}

/// A failure without a usable response: the key is released, or the
/// failure stored, as [`release_on_server_error`](crate::IdempotencyLayer::release_on_server_error) says.
async fn release_or_store<B: Backend, ResBody>(
    shared: &Shared<B>,
    ticket: B::Ticket,
    failure: Response<ResponseBody<ResBody>>,
) -> Response<ResponseBody<ResBody>> {
    if shared.config.release_on_server_error {
        release(shared, ticket).await;
        return failure;
    }
    let (parts, body) = into_stored_parts(failure);
    store(shared, ticket, parts, body).await
}

async fn release<B: Backend>(shared: &Shared<B>, ticket: B::Ticket) {
    if let Err(e) = shared.backend.release(ticket).await {
        shared.report(BackendStage::Release, &e);
    }
}

/// Stores the response and answers it with `Idempotency-Expires`; if it
/// cannot be stored, answers it without.
async fn store<B: Backend, ResBody>(
    shared: &Shared<B>,
    ticket: B::Ticket,
    parts: http::response::Parts,
    body: Bytes,
) -> Response<ResponseBody<ResBody>> {
    let config = &shared.config;
    let kept = parts
        .headers
        .iter()
        .filter(|(name, _)| config.store_headers.contains(name));
    match encode_parts(parts.status, kept, &body) {
        Ok(encoded) if encoded.len() <= shared.backend.max_response_len() => {
            finish(shared, ticket, parts, body, encoded).await
        }
        _ => store_too_large(shared, ticket).await,
    }
}

/// The handler ran but its response cannot be stored: stores a 500 problem
/// instead (small enough for any backend), so that a retry does not run
/// the handler again, and answers it.
async fn store_too_large<B: Backend, ResBody>(
    shared: &Shared<B>,
    ticket: B::Ticket,
) -> Response<ResponseBody<ResBody>> {
    let answer = problem::<ResBody>(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Response too large to store",
        "the request was processed but its response is too large to replay; \
         do not retry it with this key",
    );
    let (parts, body) = into_stored_parts(answer);
    let encoded = encode_parts(parts.status, parts.headers.iter(), &body).unwrap_or_default();
    finish(shared, ticket, parts, body, encoded).await
}

async fn finish<B: Backend, ResBody>(
    shared: &Shared<B>,
    ticket: B::Ticket,
    mut parts: http::response::Parts,
    body: Bytes,
    encoded: Vec<u8>,
) -> Response<ResponseBody<ResBody>> {
    let retention = shared.config.retention;
    let expires_s = now_ms().saturating_add(duration_ms(retention)) / 1000;
    match shared.backend.complete(ticket, &encoded, retention).await {
        Ok(()) => {
            parts
                .headers
                .insert(IDEMPOTENCY_EXPIRES, HeaderValue::from(expires_s));
        }
        Err(e) => shared.report(BackendStage::Complete, &e),
    }
    Response::from_parts(parts, ResponseBody::full(body))
}

/// A response the layer made, split for storing.
fn into_stored_parts<ResBody>(
    response: Response<ResponseBody<ResBody>>,
) -> (http::response::Parts, Bytes) {
    let (parts, body) = response.into_parts();
    (parts, body.into_full().unwrap_or_default())
}

/// The stored response, replayed.
fn replay<ResBody>(done: &Completed) -> Response<ResponseBody<ResBody>> {
    let Ok(stored) = StoredResponse::decode(done.response()) else {
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Stored response unreadable",
            "the stored response for this key could not be decoded",
        );
    };
    let mut response = Response::new(ResponseBody::full(stored.body));
    *response.status_mut() = stored.status;
    let headers = response.headers_mut();
    for (name, value) in stored.headers {
        headers.append(name, value);
    }
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    headers.insert(
        IDEMPOTENCY_EXPIRES,
        HeaderValue::from(done.expires_at_ms() / 1000),
    );
    response
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, duration_ms)
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pin_project! {
    /// A future's output, or the panic it raised while polled.
    struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        // After a panic the output is ready, so the future is never polled
        // again in the state the panic left it in.
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
