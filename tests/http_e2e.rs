//! End to end over real TCP: the `axum_server` example's order service,
//! started on 127.0.0.1, driven by an HTTP client. Concurrent duplicate
//! POSTs create one order and all get the same bytes; retries replay;
//! a reused key with another body gets 422, a missing key 400, a request
//! still running 409 with `Retry-After`; a handler's 5xx releases the key;
//! and the records survive a restart of the server and the store.
//! The idempotency is `idemkv_tower`'s layer, configured as the example
//! configures it.

#[path = "../examples/axum_server/app.rs"]
mod app;

use app::Orders;
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use idemkv::{Error, Store};
use idemkv_tower::{DEFAULT_RETENTION, IdempotencyLayer};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A server on an ephemeral port, stopped gracefully by [`Server::stop`].
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(app: Router) -> Server {
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

    /// Stops accepting, lets requests in flight finish, and drops the app.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for &(name, value) in headers {
        request = request.header(name, value);
    }
    let request = request
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// `POST /v1/orders` as tenant `acme`, with `key` as the Idempotency-Key.
async fn post_order(
    client: &HttpClient,
    addr: SocketAddr,
    key: Option<&str>,
    body: &str,
) -> Answer {
    let mut headers = vec![("x-tenant", "acme")];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    send(client, addr, Method::POST, "/v1/orders", &headers, body).await
}

async fn order_count(client: &HttpClient, addr: SocketAddr) -> u64 {
    let answer = send(client, addr, Method::GET, "/v1/orders/count", &[], "").await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.json()["count"].as_u64().unwrap()
}

/// Opens the store, waiting out the moment in which a stopped server's
/// last clone of the previous handle is still being dropped.
async fn reopen(dir: &Path) -> Store {
    for _ in 0..500 {
        match Store::open(dir) {
            Err(Error::Locked) => tokio::time::sleep(Duration::from_millis(10)).await,
            other => return other.unwrap(),
        }
    }
    panic!("the store in {} stayed locked", dir.display());
}

/// Returns once `n` requests are parked in `claim_wait_async` on `store`.
async fn wait_for_waiters(store: &Store, n: u64) {
    for _ in 0..4000 {
        if store.stats().waiting >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "{n} requests never waited together: {:?}",
        store.stats().waiting
    );
}

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The advertised expiry is about the configured retention from now.
fn assert_expires_after_retention(answer: &Answer, retention: Duration) {
    let expires: u64 = answer
        .header("idempotency-expires")
        .expect("Idempotency-Expires on a stored or replayed response")
        .parse()
        .unwrap();
    let expected = unix_now_s() + retention.as_secs();
    assert!(
        expires.abs_diff(expected) <= 120,
        "expires {expires}, expected about {expected}"
    );
}

fn waiting(store: Store) -> IdempotencyLayer<Store> {
    app::idempotency(store).wait(Some(Duration::from_secs(30)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_create_one_order_and_get_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let orders = Orders::new();
    let app = app::app_with_orders(Some(waiting(store.clone())), orders.clone());
    let server = Server::start(app).await;
    let (addr, client) = (server.addr, client());
    // The first copy to claim holds in the handler until the gate opens,
    // so every other copy overlaps it for certain.
    let body = r#"{"item": "book", "quantity": 2, "hold": true}"#;

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { post_order(&client, addr, Some("order-1"), body).await })
        })
        .collect();
    wait_for_waiters(&store, 49).await;
    assert_eq!(order_count(&client, addr).await, 0);
    orders.open_gate();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }

    assert_eq!(
        order_count(&client, addr).await,
        1,
        "one order for 50 duplicates"
    );
    let fresh: Vec<&Answer> = answers.iter().filter(|a| !a.replayed()).collect();
    assert_eq!(fresh.len(), 1, "exactly one response ran the handler");
    let first = fresh[0];
    assert_eq!(first.status, StatusCode::CREATED);
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let location = format!("/v1/orders/{id}");
    assert_eq!(first.header("location"), Some(location.as_str()));
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_expires_after_retention(first, DEFAULT_RETENTION);
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        assert_eq!(
            answer.body, first.body,
            "every duplicate gets the same bytes"
        );
        assert_eq!(answer.header("location"), Some(location.as_str()));
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_expires_after_retention(answer, DEFAULT_RETENTION);
    }

    // A later retry replays the same bytes and Location; still one order.
    let retry = post_order(&client, addr, Some("order-1"), body).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(retry.replayed());
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.header("location"), Some(location.as_str()));
    assert_eq!(order_count(&client, addr).await, 1);

    // The Location names the order that was created.
    let order = send(&client, addr, Method::GET, &location, &[], "").await;
    assert_eq!(order.status, StatusCode::OK);
    assert_eq!(order.json(), first.json());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_missing_key_mismatch_and_oversized_body() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let layer = app::idempotency(store).max_body_len(1024);
    let server = Server::start(app::app(layer)).await;
    let (addr, client) = (server.addr, client());

    // No key: 400 with a problem body, and no order.
    let missing = post_order(&client, addr, None, r#"{"item": "pen"}"#).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(missing.json()["status"], 400);
    assert!(
        missing.json()["title"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
    let empty = post_order(&client, addr, Some("\"\""), r#"{"item": "pen"}"#).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert_eq!(order_count(&client, addr).await, 0);

    // The same key with another body: 422, and still one order.
    let created = post_order(&client, addr, Some("k-7"), r#"{"item": "pen"}"#).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let other = post_order(&client, addr, Some("k-7"), r#"{"item": "ink"}"#).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        other.header("content-type"),
        Some("application/problem+json")
    );
    assert!(!other.replayed());
    assert_eq!(order_count(&client, addr).await, 1);

    // The draft's quoted form names the same key.
    let quoted = post_order(&client, addr, Some("\"k-7\""), r#"{"item": "pen"}"#).await;
    assert!(quoted.replayed());
    assert_eq!(quoted.body, created.body);

    // Keys are scoped by the caller: another tenant's "k-7" is its own.
    let headers = [("x-tenant", "globex"), ("idempotency-key", "k-7")];
    let body = r#"{"item": "pen"}"#;
    let theirs = send(&client, addr, Method::POST, "/v1/orders", &headers, body).await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    assert!(!theirs.replayed());
    assert_ne!(theirs.body, created.body);
    assert_eq!(order_count(&client, addr).await, 2);

    // A body over the limit is refused before anything is claimed.
    let big = format!(r#"{{"item": "{}"}}"#, "x".repeat(2000));
    let refused = post_order(&client, addr, Some("k-8"), &big).await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
    let small = post_order(&client, addr, Some("k-8"), r#"{"item": "cap"}"#).await;
    assert_eq!(small.status, StatusCode::CREATED);
    assert!(!small.replayed());
    assert_eq!(order_count(&client, addr).await, 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_releases_the_key_and_the_retry_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let server = Server::start(app::app(app::idempotency(store))).await;
    let (addr, client) = (server.addr, client());
    let body = r#"{"item": "lamp", "fail_first": true}"#;

    let failed = post_order(&client, addr, Some("k-5xx"), body).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!failed.replayed());
    assert_eq!(
        failed.header("idempotency-expires"),
        None,
        "a released key is not stored"
    );
    assert_eq!(order_count(&client, addr).await, 0);

    let retried = post_order(&client, addr, Some("k-5xx"), body).await;
    assert_eq!(
        retried.status,
        StatusCode::CREATED,
        "the retry ran the handler again"
    );
    assert!(!retried.replayed());
    assert_eq!(order_count(&client, addr).await, 1);

    let again = post_order(&client, addr, Some("k-5xx"), body).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert!(again.replayed());
    assert_eq!(again.body, retried.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_server_error_is_replayed_when_release_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let layer = app::idempotency(store).release_on_server_error(false);
    let server = Server::start(app::app(layer)).await;
    let (addr, client) = (server.addr, client());
    let body = r#"{"item": "lamp", "fail_first": true}"#;

    let failed = post_order(&client, addr, Some("k-5xx"), body).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    let retried = post_order(&client, addr, Some("k-5xx"), body).await;
    assert_eq!(retried.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retried.replayed());
    assert_eq!(retried.body, failed.body);
    assert_eq!(order_count(&client, addr).await, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_progress_gets_409_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let orders = Orders::new();
    let app = app::app_with_orders(Some(app::idempotency(store)), orders.clone());
    let server = Server::start(app).await;
    let (addr, client) = (server.addr, client());
    let body = r#"{"item": "desk", "hold": true}"#;

    // Two copies race; whichever claims first holds in the handler until
    // the gate opens, so the other necessarily finds the key in progress.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..2 {
        let (client, tx) = (client.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send(post_order(&client, addr, Some("k-slow"), body).await);
        });
    }
    let conflict = rx.recv().await.unwrap();
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{conflict:?}");
    assert_eq!(
        conflict.header("content-type"),
        Some("application/problem+json")
    );
    let retry_after: u64 = conflict.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After {retry_after} is the rest of a 60 s lease"
    );
    assert_eq!(
        order_count(&client, addr).await,
        0,
        "the holder has not created it yet"
    );

    orders.open_gate();
    let created = rx.recv().await.unwrap();
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(!created.replayed());
    let retry = post_order(&client, addr, Some("k-slow"), body).await;
    assert!(retry.replayed());
    assert_eq!(retry.body, created.body);
    assert_eq!(order_count(&client, addr).await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_restart_of_server_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let orders = Orders::new(); // the service's database, which outlives the server
    let body = r#"{"item": "chair"}"#;
    let client = client();

    let store = Store::open(dir.path()).unwrap();
    let server = Server::start(app::app_with_orders(
        Some(app::idempotency(store)),
        orders.clone(),
    ))
    .await;
    let first = post_order(&client, server.addr, Some("k-restart"), body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.replayed());
    server.stop().await;

    let store = reopen(dir.path()).await;
    let server = Server::start(app::app_with_orders(
        Some(app::idempotency(store)),
        orders.clone(),
    ))
    .await;
    let retry = post_order(&client, server.addr, Some("k-restart"), body).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(retry.replayed(), "the record came back from disk");
    assert_eq!(retry.body, first.body, "same order id, same bytes");
    assert_eq!(retry.header("location"), first.header("location"));
    assert_eq!(retry.header("content-type"), Some("application/json"));
    assert_expires_after_retention(&retry, DEFAULT_RETENTION);
    assert_eq!(order_count(&client, server.addr).await, 1);
    server.stop().await;
}

#[test]
fn stored_responses_round_trip_and_reject_damage() {
    use idemkv_tower::{STORED_RESPONSE_VERSION, StoredResponse};
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (
            header::LOCATION,
            HeaderValue::from_static("/v1/orders/ord_000001"),
        ),
        (
            HeaderName::from_static("x-empty"),
            HeaderValue::from_static(""),
        ),
    ];
    let body = br#"{"id":"ord_000001"}"#;
    let stored = StoredResponse {
        status: StatusCode::CREATED,
        headers: headers.to_vec(),
        body: Bytes::from_static(body),
    };
    let bytes = stored.encode().unwrap();
    assert_eq!(bytes[0], STORED_RESPONSE_VERSION);
    assert_eq!(
        &bytes[1..5],
        &[0, 201, 0, 3],
        "status and header count, big-endian"
    );
    assert_eq!(StoredResponse::decode(&bytes), Ok(stored));
    for cut in 0..bytes.len() {
        assert!(
            StoredResponse::decode(&bytes[..cut]).is_err(),
            "truncated at {cut}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(StoredResponse::decode(&longer).is_err(), "trailing bytes");
    let mut other_version = bytes.clone();
    other_version[0] = 2;
    assert!(
        StoredResponse::decode(&other_version).is_err(),
        "unknown version"
    );
}
