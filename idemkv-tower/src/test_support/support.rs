//! The scenarios' server, client, service and failing backend.

use crate::IdempotencyLayer;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use idemkv::{Backend, Claim, Fingerprint, Record, Result, Seen};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

/// A server on an ephemeral port of 127.0.0.1, stopped gracefully by
/// [`Server::stop`].
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Serves `app` until stopped.
    pub async fn start(app: Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Server { addr, stop, task }
    }

    /// Stops accepting, lets requests in flight finish, drops the service.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// What the client received.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// Every header.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Whether it is a replay.
    pub fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    /// Its `Idempotency-Expires`, in unix seconds.
    pub fn expires(&self) -> Option<u64> {
        self.header("idempotency-expires")
            .map(|v| v.parse().unwrap())
    }

    /// Its `Retry-After`, in seconds.
    pub fn retry_after(&self) -> Option<u64> {
        self.header("retry-after").map(|v| v.parse().unwrap())
    }

    /// Asserts a problem response with this status.
    pub fn assert_problem(&self, status: StatusCode) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let status = format!(r#""status":{}"#, status.as_u16());
        assert!(
            String::from_utf8_lossy(&self.body).contains(&status),
            "{self:?}"
        );
        assert!(!self.replayed());
    }
}

/// An HTTP client over TCP.
#[derive(Debug, Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
}

impl Client {
    /// A client of the server at `addr`.
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
            addr,
        }
    }

    /// Sends a request; `headers` may repeat a name.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for &(name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(body.into())).unwrap();
        let response = self.inner.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    /// `POST path` as caller `acme`, with `key` as the Idempotency-Key.
    pub async fn post(&self, path: &str, key: &str, body: impl Into<Bytes>) -> Answer {
        let headers = [("x-caller", "acme"), ("idempotency-key", key)];
        self.send(Method::POST, path, &headers, body).await
    }

    /// How many orders the shop created.
    pub async fn orders(&self) -> u64 {
        let answer = self.send(Method::GET, "/count", &[], "").await;
        assert_eq!(answer.status, StatusCode::OK);
        std::str::from_utf8(&answer.body).unwrap().parse().unwrap()
    }
}

/// Polls `done` every 5 ms until it holds; panics after 20 s.
pub async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..4000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never happened: {what}");
}

/// The scenarios' service: a shop whose side effect is creating an order.
/// Cheap to clone; clones share everything, and it outlives a server (as a
/// database would).
#[derive(Debug, Clone)]
pub struct Shop {
    inner: Arc<ShopInner>,
}

#[derive(Debug)]
struct ShopInner {
    orders: AtomicU64,
    started: AtomicU64,
    gate: Semaphore,
    failed: Mutex<HashSet<Bytes>>,
}

impl Default for Shop {
    fn default() -> Self {
        Shop {
            inner: Arc::new(ShopInner {
                orders: AtomicU64::new(0),
                started: AtomicU64::new(0),
                gate: Semaphore::new(0),
                failed: Mutex::default(),
            }),
        }
    }
}

impl Shop {
    /// Orders created: the side effects that happened.
    pub fn orders(&self) -> u64 {
        self.inner.orders.load(Ordering::SeqCst)
    }

    /// Handler runs that started, whatever their end.
    pub fn started(&self) -> u64 {
        self.inner.started.load(Ordering::SeqCst)
    }

    /// Lets one held request (`POST /hold`) proceed, now or when it comes.
    pub fn open_gate(&self) {
        self.inner.gate.add_permits(1);
    }

    fn start(&self) {
        self.inner.started.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether this is the first time `body` failed.
    fn first_failure(&self, body: &Bytes) -> bool {
        self.inner.failed.lock().unwrap().insert(body.clone())
    }

    fn create(&self, body: &[u8]) -> Response {
        let n = self.inner.orders.fetch_add(1, Ordering::SeqCst) + 1;
        let mut text = format!("order {n} for ").into_bytes();
        text.extend_from_slice(body);
        (
            StatusCode::CREATED,
            [
                (header::LOCATION, format!("/orders/{n}")),
                (header::CONTENT_TYPE, "text/plain".to_owned()),
                (header::SET_COOKIE, format!("session={n}")),
                (header::HeaderName::from_static("x-stored"), n.to_string()),
                (header::HeaderName::from_static("x-unstored"), n.to_string()),
            ],
            text,
        )
            .into_response()
    }
}

/// The shop behind `layer`:
///
/// | route | does |
/// |---|---|
/// | `POST`/`PATCH /orders`, `POST /orders/{any}` | creates an order: 201, `Location`, `content-type`, `set-cookie`, `x-stored`, `x-unstored` |
/// | `POST /hold` | waits for [`Shop::open_gate`], then creates an order |
/// | `POST /fail-first` | 503 the first time for a body, then creates an order |
/// | `POST /panic-first` | panics the first time for a body, then creates an order |
/// | `POST /big` | creates an order and answers a body of as many bytes as the request body says |
/// | `GET /count` | the number of orders, not covered by the layer |
pub fn app<B: Backend + 'static>(shop: Shop, layer: IdempotencyLayer<B>) -> Router {
    Router::new()
        .route("/orders", post(create).patch(create))
        .route("/orders/{id}", post(create_at))
        .route("/hold", post(hold))
        .route("/fail-first", post(fail_first))
        .route("/panic-first", post(panic_first))
        .route("/big", post(big))
        .route("/count", get(count))
        .layer(layer)
        .with_state(shop)
}

async fn create(State(shop): State<Shop>, body: Bytes) -> Response {
    shop.start();
    shop.create(&body)
}

async fn create_at(State(shop): State<Shop>, Path(_id): Path<String>, body: Bytes) -> Response {
    shop.start();
    shop.create(&body)
}

async fn hold(State(shop): State<Shop>, body: Bytes) -> Response {
    shop.start();
    let permit = shop.inner.gate.acquire().await;
    permit.expect("the gate is never closed").forget();
    shop.create(&body)
}

async fn fail_first(State(shop): State<Shop>, body: Bytes) -> Response {
    shop.start();
    if shop.first_failure(&body) {
        return (StatusCode::SERVICE_UNAVAILABLE, "upstream down; retry").into_response();
    }
    shop.create(&body)
}

async fn panic_first(State(shop): State<Shop>, body: Bytes) -> Response {
    shop.start();
    if shop.first_failure(&body) {
        panic!("the handler failed (a scenario's deliberate panic)");
    }
    shop.create(&body)
}

async fn big(State(shop): State<Shop>, body: Bytes) -> Response {
    shop.start();
    let len: usize = std::str::from_utf8(&body).unwrap().parse().unwrap();
    shop.create(b"big");
    (StatusCode::CREATED, vec![b'x'; len]).into_response()
}

async fn count(State(shop): State<Shop>) -> String {
    shop.orders().to_string()
}

/// A backend that answers [`idemkv::Error::Unreachable`] to every call
/// while its [`BreakSwitch`] is down, without calling the backend it wraps:
/// a backend that cannot be reached.
#[derive(Debug)]
pub struct Breakable<B> {
    inner: B,
    down: Arc<AtomicBool>,
}

/// Takes a [`Breakable`] backend down and up again.
#[derive(Debug, Clone)]
pub struct BreakSwitch(Arc<AtomicBool>);

impl BreakSwitch {
    /// Whether calls fail from now on.
    pub fn set_down(&self, down: bool) {
        self.0.store(down, Ordering::SeqCst);
    }
}

impl<B> Breakable<B> {
    /// `inner`, up, and the switch that takes it down.
    pub fn new(inner: B) -> (Breakable<B>, BreakSwitch) {
        let down = Arc::new(AtomicBool::new(false));
        let switch = BreakSwitch(Arc::clone(&down));
        (Breakable { inner, down }, switch)
    }

    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(idemkv::Error::Unreachable {
                source: "connection refused (the scenario took the backend down)".into(),
            });
        }
        Ok(())
    }
}

impl<B: Backend> Backend for Breakable<B> {
    type Ticket = B::Ticket;

    async fn claim(&self, key: &[u8], fingerprint: Fingerprint) -> Result<Claim<B::Ticket>> {
        self.check()?;
        self.inner.claim(key, fingerprint).await
    }

    async fn claim_wait(
        &self,
        key: &[u8],
        fingerprint: Fingerprint,
        timeout: Duration,
    ) -> Result<Claim<B::Ticket>> {
        self.check()?;
        self.inner.claim_wait(key, fingerprint, timeout).await
    }

    async fn complete(
        &self,
        ticket: B::Ticket,
        response: &[u8],
        retention: Duration,
    ) -> Result<()> {
        self.check()?;
        self.inner.complete(ticket, response, retention).await
    }

    async fn release(&self, ticket: B::Ticket) -> Result<()> {
        self.check()?;
        self.inner.release(ticket).await
    }

    async fn extend_lease(&self, ticket: &B::Ticket, by: Duration) -> Result<u64> {
        self.check()?;
        self.inner.extend_lease(ticket, by).await
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Record>> {
        self.check()?;
        self.inner.get(key).await
    }

    async fn remove(&self, key: &[u8]) -> Result<bool> {
        self.check()?;
        self.inner.remove(key).await
    }

    async fn mark_seen(&self, key: &[u8], retain: Duration) -> Result<Seen> {
        self.check()?;
        self.inner.mark_seen(key, retain).await
    }

    fn max_response_len(&self) -> usize {
        self.inner.max_response_len()
    }
}
