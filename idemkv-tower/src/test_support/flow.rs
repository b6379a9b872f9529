//! Scenarios of the claim/complete flow: duplicates, replays, refusals,
//! releases, restarts, failures.

use super::E2eHarness;
use super::support::{Answer, Breakable, Client, Server, Shop, app, until};
use crate::{BackendStage, IdempotencyLayer, Rejection};
use http::{HeaderName, StatusCode, header};
use idemkv::Backend;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;

/// The scenarios' layer over `backend`: the caller is the `x-caller`
/// header (401 without it), and `set-cookie` is listed among the stored
/// headers, to show it is never stored anyway.
pub fn layer<B>(backend: B) -> IdempotencyLayer<B> {
    IdempotencyLayer::new(backend)
        .caller(|parts| match parts.headers.get("x-caller") {
            Some(caller) => Ok(caller.as_bytes().to_vec()),
            None => Err(Rejection::unauthorized("send x-caller")),
        })
        .store_headers([
            header::CONTENT_TYPE,
            header::LOCATION,
            header::SET_COOKIE,
            HeaderName::from_static("x-stored"),
        ])
}

/// A server for `shop` behind `layer`, and a client of it.
pub async fn serve<B: Backend + 'static>(
    shop: &Shop,
    layer: IdempotencyLayer<B>,
) -> (Server, Client) {
    let server = Server::start(app(shop.clone(), layer)).await;
    let client = Client::new(server.addr);
    (server, client)
}

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Asserts a first (not replayed) 201 from the shop, stored for 24 h.
fn assert_fresh_order(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    assert!(!answer.replayed(), "{answer:?}");
    let expires = answer.expires().expect("Idempotency-Expires when stored");
    let expected = unix_now_s() + 24 * 3600;
    assert!(expires.abs_diff(expected) <= 600, "{expires} vs {expected}");
}

/// Asserts that `retry` replays `first`: same status, stored headers and
/// body, marked, without the headers that are not stored.
pub fn assert_replay_of(retry: &Answer, first: &Answer) {
    assert!(retry.replayed(), "{retry:?}");
    assert_eq!(retry.status, first.status);
    assert_eq!(retry.body, first.body, "the same bytes");
    for name in ["content-type", "location", "x-stored"] {
        assert_eq!(retry.header(name), first.header(name), "{name}");
    }
    assert_eq!(retry.header("x-unstored"), None, "not in the allow-list");
    assert_eq!(retry.header("set-cookie"), None, "never stored");
    let (a, b) = (retry.expires().unwrap(), first.expires().unwrap());
    assert!(a.abs_diff(b) <= 600, "expiries {a} and {b}");
}

/// 20 copies of one request at once, in wait mode: one side effect, and
/// every copy gets the same status, stored headers and body.
pub async fn concurrent_duplicates_run_once<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let layer = layer(h.backend().await).wait(Some(Duration::from_secs(60)));
    let (server, client) = serve(&shop, layer.clone()).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.post("/hold", "dup-1", "a book").await })
        })
        .collect();
    // The first copy holds in the handler until the gate opens, so every
    // other copy overlaps it for certain.
    until("one handler runs and 19 copies wait", || {
        shop.started() == 1 && layer.waiting() == 19
    })
    .await;
    assert_eq!(shop.orders(), 0);
    shop.open_gate();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert_eq!((shop.started(), shop.orders()), (1, 1), "one side effect");
    let fresh: Vec<&Answer> = answers.iter().filter(|a| !a.replayed()).collect();
    assert_eq!(fresh.len(), 1, "one answer ran the handler");
    assert_fresh_order(fresh[0]);
    for answer in &answers {
        if answer.replayed() {
            assert_replay_of(answer, fresh[0]);
        }
    }
    assert_eq!(client.orders().await, 1);
    server.stop().await;
}

/// Sequential retries replay the first answer's bytes; the quoted key form
/// names the same key; another method on the path is another operation.
pub async fn retries_replay_identical_bytes<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let (server, client) = serve(&shop, layer(h.backend().await)).await;
    let first = client.post("/orders", "k-1", "a book").await;
    assert_fresh_order(&first);
    assert_eq!(first.header("set-cookie"), Some("session=1"));
    assert_eq!(first.header("location"), Some("/orders/1"));
    for key in ["k-1", "\"k-1\"", "k-1"] {
        let retry = client.post("/orders", key, "a book").await;
        assert_replay_of(&retry, &first);
    }
    let headers = [("x-caller", "acme"), ("idempotency-key", "k-1")];
    let patch = client
        .send(http::Method::PATCH, "/orders", &headers, "a book")
        .await;
    assert_fresh_order(&patch);
    assert_eq!((shop.started(), shop.orders()), (2, 2));
    server.stop().await;
}

/// A key reused with another body is 422 and runs nothing; the same key
/// on another route, or from another caller, is another operation.
pub async fn mismatch_is_422_and_keys_are_scoped<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let (server, client) = serve(&shop, layer(h.backend().await)).await;
    let first = client.post("/orders", "k-2", "a pen").await;
    assert_fresh_order(&first);
    let reused = client.post("/orders", "k-2", "an ink").await;
    reused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(shop.started(), 1, "the handler did not run");
    let other_route = client.post("/orders/7", "k-2", "an ink").await;
    assert_fresh_order(&other_route);
    let headers = [("x-caller", "globex"), ("idempotency-key", "k-2")];
    let theirs = client
        .send(http::Method::POST, "/orders", &headers, "a pen")
        .await;
    assert_fresh_order(&theirs);
    assert_ne!(theirs.body, first.body, "their own order, not acme's");
    let again = client.post("/orders", "k-2", "a pen").await;
    assert_replay_of(&again, &first);
    assert_eq!((shop.started(), shop.orders()), (3, 3));
    server.stop().await;
}

/// Without waiting, a copy that arrives while the first runs gets 409 with
/// `Retry-After`, and runs nothing.
pub async fn in_progress_is_409_with_retry_after<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let (server, client) = serve(&shop, layer(h.backend().await)).await;
    let c = client.clone();
    let first = tokio::spawn(async move { c.post("/hold", "k-3", "a desk").await });
    until("the first request runs", || shop.started() == 1).await;
    let conflict = client.post("/hold", "k-3", "a desk").await;
    conflict.assert_problem(StatusCode::CONFLICT);
    let retry_after = conflict.retry_after().expect("Retry-After on 409");
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    assert_eq!((shop.started(), shop.orders()), (1, 0));
    shop.open_gate();
    let first = first.await.unwrap();
    assert_fresh_order(&first);
    let retry = client.post("/hold", "k-3", "a desk").await;
    assert_replay_of(&retry, &first);
    assert_eq!(shop.orders(), 1);
    server.stop().await;
}

/// A 5xx releases the key: it is not stored, and the retry runs again.
pub async fn server_error_releases_then_the_retry_runs<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let (server, client) = serve(&shop, layer(h.backend().await)).await;
    let failed = client.post("/fail-first", "k-4", "a lamp").await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        failed.body, "upstream down; retry",
        "the handler's own answer"
    );
    assert!(!failed.replayed());
    assert_eq!(failed.expires(), None, "a released key is not stored");
    let retried = client.post("/fail-first", "k-4", "a lamp").await;
    assert_fresh_order(&retried);
    let again = client.post("/fail-first", "k-4", "a lamp").await;
    assert_replay_of(&again, &retried);
    assert_eq!((shop.started(), shop.orders()), (2, 1));
    server.stop().await;
}

/// With release off, a 5xx is stored and replayed like any answer.
pub async fn server_error_is_stored_when_release_is_off<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let layer = layer(h.backend().await).release_on_server_error(false);
    let (server, client) = serve(&shop, layer).await;
    let failed = client.post("/fail-first", "k-4", "a lamp").await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(failed.expires().is_some(), "stored");
    let retried = client.post("/fail-first", "k-4", "a lamp").await;
    assert_eq!(retried.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retried.replayed());
    assert_eq!(retried.body, failed.body);
    assert_eq!((shop.started(), shop.orders()), (1, 0));
    server.stop().await;
}

/// A handler that panics gets 500 and its key released: the retry runs.
pub async fn panic_releases_the_key<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let (server, client) = serve(&shop, layer(h.backend().await)).await;
    let panicked = client.post("/panic-first", "k-5", "a vase").await;
    panicked.assert_problem(StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(panicked.expires(), None);
    let retried = client.post("/panic-first", "k-5", "a vase").await;
    assert_fresh_order(&retried);
    let again = client.post("/panic-first", "k-5", "a vase").await;
    assert_replay_of(&again, &retried);
    assert_eq!((shop.started(), shop.orders()), (2, 1));
    server.stop().await;
}

/// A new server over the reopened backend replays what the old one stored.
pub async fn records_survive_a_restart<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let (server, client) = serve(&shop, layer(h.backend().await)).await;
    let first = client.post("/orders", "k-6", "a chair").await;
    assert_fresh_order(&first);
    server.stop().await;

    let (server, client) = serve(&shop, layer(h.reopen().await)).await;
    let retry = client.post("/orders", "k-6", "a chair").await;
    assert_replay_of(&retry, &first);
    let reused = client.post("/orders", "k-6", "a table").await;
    reused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!((shop.started(), shop.orders()), (1, 1));
    server.stop().await;
}

type Reported = Arc<Mutex<Vec<BackendStage>>>;

/// The scenarios' layer over a breakable `backend`, recording the stages
/// of the backend errors it reports.
fn breakable_layer<B: Backend>(
    backend: B,
) -> (IdempotencyLayer<Breakable<B>>, super::BreakSwitch, Reported) {
    let (backend, switch) = Breakable::new(backend);
    let reported = Reported::default();
    let r = Arc::clone(&reported);
    let layer = layer(backend).on_backend_error(move |stage, error| {
        assert!(
            matches!(error, idemkv::Error::Unreachable { .. }),
            "{error:?}"
        );
        r.lock().unwrap().push(stage);
    });
    (layer, switch, reported)
}

/// A backend that cannot be reached ([`E2eHarness::set_down`]): 503 with
/// `Retry-After`, the handler does not run, and once it is back the same
/// key runs normally.
pub async fn backend_down_is_503_and_the_handler_does_not_run<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let (layer, switch, reported) = breakable_layer(h.backend().await);
    let (server, client) =
        serve(&shop, layer.unavailable_retry_after(Duration::from_secs(3))).await;
    h.set_down(&switch, true).await;
    let down = client.post("/orders", "k-7", "a rug").await;
    down.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.retry_after(), Some(3));
    assert!(
        !String::from_utf8_lossy(&down.body).contains("scenario"),
        "the backend's error text stays in the server"
    );
    assert_eq!(shop.started(), 0, "the handler did not run");
    assert_eq!(*reported.lock().unwrap(), [BackendStage::Claim]);
    h.set_down(&switch, false).await;
    let up = client.post("/orders", "k-7", "a rug").await;
    assert_fresh_order(&up);
    assert_eq!((shop.started(), shop.orders()), (1, 1));
    server.stop().await;
}

/// The backend goes down ([`E2eHarness::set_down`]) after the handler
/// started: the client still gets the answer (without
/// `Idempotency-Expires`), and once the backend is back a retry finds the
/// key in progress (409: the claim was recorded) rather than running the
/// handler again.
pub async fn failed_complete_still_answers_and_never_runs_twice<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let (layer, switch, reported) = breakable_layer(h.backend().await);
    let (server, client) = serve(&shop, layer).await;
    let c = client.clone();
    let first = tokio::spawn(async move { c.post("/hold", "k-8", "a bed").await });
    until("the handler runs", || shop.started() == 1).await;
    h.set_down(&switch, true).await;
    shop.open_gate();
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.expires(), None, "not stored");
    assert_eq!(*reported.lock().unwrap(), [BackendStage::Complete]);
    h.set_down(&switch, false).await;
    let retry = client.post("/hold", "k-8", "a bed").await;
    retry.assert_problem(StatusCode::CONFLICT);
    assert!(retry.retry_after().is_some());
    assert_eq!((shop.started(), shop.orders()), (1, 1));
    server.stop().await;
}

/// A client that hangs up while its request runs does not abandon the
/// claim: the handler finishes, its answer is stored, the retry replays it.
pub async fn client_hangup_does_not_abandon_the_claim<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let (server, client) = serve(&shop, layer(h.backend().await)).await;
    let stream = raw_send(
        server.addr,
        "POST /hold HTTP/1.1\r\nhost: test\r\nx-caller: acme\r\n\
         idempotency-key: k-9\r\ncontent-length: 6\r\n\r\na sofa",
    )
    .await;
    until("the handler runs", || shop.started() == 1).await;
    drop(stream);
    shop.open_gate();
    until("the order is made", || shop.orders() == 1).await;
    let mut retry = client.post("/hold", "k-9", "a sofa").await;
    for _ in 0..4000 {
        if retry.status != StatusCode::CONFLICT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        retry = client.post("/hold", "k-9", "a sofa").await;
    }
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert!(retry.replayed(), "the hung-up request's answer was stored");
    assert_eq!(retry.body, "order 1 for a sofa");
    assert_eq!((shop.started(), shop.orders()), (1, 1));
    server.stop().await;
}

/// Opens a connection and writes `request` on it.
pub async fn raw_send(addr: SocketAddr, request: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    stream
}
