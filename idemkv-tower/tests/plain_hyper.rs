//! The layer in a plain hyper server (no axum): a `tower::service_fn`
//! handler behind `ServiceBuilder`, served over 127.0.0.1 with hyper's
//! HTTP/1 connection and driven by hyper's client. And the embedded store
//! on a simulated disk whose fsync fails: 503, and the handler never runs.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use idemkv::storage::{SimOp, SimStorage};
use idemkv::{Backend, Options, Store};
use idemkv_tower::{BackendStage, IdempotencyLayer, Rejection, RequestBody};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tower::ServiceBuilder;

/// Serves `layer` around a handler that counts its runs and echoes the
/// request body, on a plain hyper server; the connections end with the
/// test's runtime.
async fn serve<B: Backend + 'static>(
    layer: IdempotencyLayer<B>,
    runs: Arc<AtomicU64>,
) -> SocketAddr {
    let handler = tower::service_fn(move |request: Request<RequestBody<Incoming>>| {
        let runs = Arc::clone(&runs);
        async move {
            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let mut text = format!("run {n}: ").into_bytes();
            text.extend_from_slice(&body);
            let response = Response::builder()
                .status(StatusCode::CREATED)
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from(text)))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    let service = ServiceBuilder::new().layer(layer).service(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new();
                let _ = connection
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

struct Answer {
    status: StatusCode,
    replayed: bool,
    retry_after: Option<String>,
    body: Bytes,
}

async fn send(addr: SocketAddr, method: Method, key: Option<&str>, body: &'static str) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}/charges"))
        .header("x-caller", "acme");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = client
        .request(
            request
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
        .await
        .unwrap();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let (replayed, retry_after) = (header("idempotent-replayed"), header("retry-after"));
    Answer {
        status: response.status(),
        replayed: replayed.as_deref() == Some("true"),
        retry_after,
        body: response.into_body().collect().await.unwrap().to_bytes(),
    }
}

fn layer<B>(backend: B) -> IdempotencyLayer<B> {
    IdempotencyLayer::new(backend).caller(|parts| {
        parts
            .headers
            .get("x-caller")
            .map(|v| v.as_bytes().to_vec())
            .ok_or(Rejection::unauthorized("send x-caller"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_hyper_service_gets_the_whole_contract() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    let addr = serve(layer(Store::open(dir.path()).unwrap()), Arc::clone(&runs)).await;

    let first = send(addr, Method::POST, Some("ch-1"), "5 EUR").await;
    assert_eq!((first.status, first.replayed), (StatusCode::CREATED, false));
    assert_eq!(
        first.body, "run 1: 5 EUR",
        "the handler read the buffered body"
    );
    let retry = send(addr, Method::POST, Some("ch-1"), "5 EUR").await;
    assert!(retry.replayed);
    assert_eq!((retry.status, &retry.body), (first.status, &first.body));
    let reused = send(addr, Method::POST, Some("ch-1"), "9 EUR").await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let missing = send(addr, Method::POST, None, "5 EUR").await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // PUT is not covered: it reaches the handler with its body streaming,
    // every time.
    for n in [2, 3] {
        let put = send(addr, Method::PUT, Some("ch-1"), "as is").await;
        assert_eq!((put.status, put.replayed), (StatusCode::CREATED, false));
        assert_eq!(put.body, format!("run {n}: as is"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_fsync_fails_answers_503_and_runs_nothing() {
    let sim = SimStorage::new();
    let store = Options::new()
        .storage(Arc::new(sim.clone()))
        .open("/sim/idem")
        .unwrap();
    let reported = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&reported);
    let layer = layer(store).on_backend_error(move |stage, error| {
        r.lock().unwrap().push((stage, error.to_string()));
    });
    let runs = Arc::new(AtomicU64::new(0));
    let addr = serve(layer, Arc::clone(&runs)).await;

    let first = send(addr, Method::POST, Some("ch-1"), "5 EUR").await;
    assert_eq!(first.status, StatusCode::CREATED);
    sim.fail(SimOp::Sync, 1, std::io::ErrorKind::Other);
    for key in ["ch-2", "ch-3"] {
        let refused = send(addr, Method::POST, Some(key), "5 EUR").await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.retry_after.as_deref(), Some("1"));
        assert!(!refused.replayed);
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "no handler ran without a durable claim"
    );
    let reported = reported.lock().unwrap();
    assert_eq!(reported.len(), 2, "{reported:?}");
    assert!(
        reported
            .iter()
            .all(|(stage, _)| *stage == BackendStage::Claim)
    );
}
