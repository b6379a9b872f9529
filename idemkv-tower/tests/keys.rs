//! How the layer builds keys from what the client sends, driven through
//! `tower::ServiceExt::oneshot` (no network needed to see the key): long
//! paths cannot stretch a key, a store with a short key limit answers 400
//! rather than 503, and a custom header name and method list are honoured.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use idemkv::{Options, Store};
use idemkv_tower::{IdempotencyLayer, RequestBody};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tower::{Service, ServiceBuilder, ServiceExt};

type Handler = tower::util::BoxCloneSyncService<
    Request<RequestBody<Full<Bytes>>>,
    Response<Full<Bytes>>,
    Infallible,
>;

/// A handler that counts its runs and answers the run's number.
fn counting(runs: &Arc<AtomicU64>) -> Handler {
    let runs = Arc::clone(runs);
    Handler::new(tower::service_fn(move |_request| {
        let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok(Response::new(Full::new(Bytes::from(n.to_string())))) }
    }))
}

async fn call<S>(
    service: &mut S,
    method: Method,
    uri: &str,
    key: (&str, &str),
) -> (StatusCode, bool, Bytes)
where
    S: Service<
            Request<Full<Bytes>>,
            Response = Response<idemkv_tower::ResponseBody<Full<Bytes>>>,
            Error = Infallible,
        >,
{
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(key.0, key.1)
        .body(Full::new(Bytes::from_static(b"body")))
        .unwrap();
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let status = response.status();
    (
        status,
        replayed,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

fn single_caller<B>(layer: IdempotencyLayer<B>) -> IdempotencyLayer<B> {
    layer.caller(|_| Ok::<_, idemkv_tower::Rejection>("the only caller"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_paths_enter_the_key_as_a_digest() {
    let dir = tempfile::tempdir().unwrap();
    // A store that takes keys of at most 200 bytes.
    let store = Options::new().max_key_len(200).open(dir.path()).unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    let mut service = ServiceBuilder::new()
        .layer(single_caller(IdempotencyLayer::new(store)))
        .service(counting(&runs));
    let key = ("idempotency-key", "k-1");

    let long_a = format!("/items/{}", "a".repeat(5000));
    let long_b = format!("/items/{}", "b".repeat(5000));
    let first = call(&mut service, Method::POST, &long_a, key).await;
    assert_eq!((first.0, first.1), (StatusCode::OK, false), "{first:?}");
    let retry = call(&mut service, Method::POST, &long_a, key).await;
    assert_eq!((retry.1, &retry.2), (true, &first.2), "replayed");
    let other = call(&mut service, Method::POST, &long_b, key).await;
    assert!(!other.1, "another long path is another key");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_the_store_limit_is_400_not_503() {
    let dir = tempfile::tempdir().unwrap();
    let store = Options::new().max_key_len(64).open(dir.path()).unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    let mut service = ServiceBuilder::new()
        .layer(single_caller(IdempotencyLayer::new(store)))
        .service(counting(&runs));
    // Within the layer's 255 bytes, but the scoped key passes the store's 64.
    let long_key = "k".repeat(100);
    let refused = call(
        &mut service,
        Method::POST,
        "/items",
        ("idempotency-key", &long_key),
    )
    .await;
    assert_eq!(refused.0, StatusCode::BAD_REQUEST, "{refused:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_name_and_methods_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let layer = single_caller(IdempotencyLayer::new(Store::open(dir.path()).unwrap()))
        .header_name(http::HeaderName::from_static("x-request-key"))
        .methods([Method::PUT]);
    let runs = Arc::new(AtomicU64::new(0));
    let mut service = ServiceBuilder::new().layer(layer).service(counting(&runs));

    let first = call(
        &mut service,
        Method::PUT,
        "/items",
        ("x-request-key", "k-1"),
    )
    .await;
    let retry = call(
        &mut service,
        Method::PUT,
        "/items",
        ("x-request-key", "k-1"),
    )
    .await;
    assert_eq!((first.1, retry.1, &retry.2), (false, true, &first.2));
    let wrong_header = call(
        &mut service,
        Method::PUT,
        "/items",
        ("idempotency-key", "k-1"),
    )
    .await;
    assert_eq!(wrong_header.0, StatusCode::BAD_REQUEST);
    let problem = String::from_utf8_lossy(&wrong_header.2).into_owned();
    assert!(problem.contains("X-Request-Key missing"), "{problem}");
    // POST is no longer covered: it runs every time, key or not.
    for _ in 0..2 {
        let post = call(
            &mut service,
            Method::POST,
            "/items",
            ("x-request-key", "k-1"),
        )
        .await;
        assert!(!post.1);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}
