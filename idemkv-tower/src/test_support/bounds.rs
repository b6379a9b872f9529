//! Scenarios of what a client controls: the caller, the key and its
//! header, the fingerprint, the body sizes, the waiters. Each bound is
//! shown to hold at its limit and to refuse one past it.

use super::E2eHarness;
use super::flow::{assert_replay_of, layer, raw_send, serve};
use super::support::{Shop, app, until};
use crate::{CallerId, FingerprintSpec, IdempotencyLayer};
use axum::extract::Request;
use http::{Method, StatusCode};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Without a caller function the layer takes the caller from the
/// request's `CallerId` extension and answers 401 without one.
pub async fn caller_is_required_by_default<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let layer = IdempotencyLayer::new(h.backend().await);
    let server = super::Server::start(app(shop.clone(), layer)).await;
    let client = super::Client::new(server.addr);
    let anonymous = client.post("/orders", "k-1", "a map").await;
    anonymous.assert_problem(StatusCode::UNAUTHORIZED);
    assert_eq!(shop.started(), 0);
    server.stop().await;

    // An authentication layer in front names the caller.
    let layer = IdempotencyLayer::new(h.backend().await);
    let authenticated = app(shop.clone(), layer).layer(axum::middleware::map_request(
        |mut request: Request| async move {
            let user = request.headers().get("x-caller").cloned();
            if let Some(user) = user {
                let id = CallerId::from(user.as_bytes());
                request.extensions_mut().insert(id);
            }
            request
        },
    ));
    let server = super::Server::start(authenticated).await;
    let client = super::Client::new(server.addr);
    let first = client.post("/orders", "k-1", "a map").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let retry = client.post("/orders", "k-1", "a map").await;
    assert!(retry.replayed());
    let headers = [("x-caller", "globex"), ("idempotency-key", "k-1")];
    let theirs = client
        .send(Method::POST, "/orders", &headers, "a map")
        .await;
    assert!(!theirs.replayed(), "another caller's key is its own");
    let headers = [("idempotency-key", "k-1")];
    let anonymous = client
        .send(Method::POST, "/orders", &headers, "a map")
        .await;
    anonymous.assert_problem(StatusCode::UNAUTHORIZED);
    assert_eq!((shop.started(), shop.orders()), (2, 2));
    server.stop().await;
}

/// The default fingerprint leaves the query out; `with_query` puts it in.
pub async fn fingerprint_covers_what_the_spec_says<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let (server, client) = serve(&shop, layer(h.backend().await)).await;
    let first = client.post("/orders?coupon=1", "k-2", "a hat").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let other_query = client.post("/orders?coupon=2", "k-2", "a hat").await;
    assert_replay_of(&other_query, &first);
    server.stop().await;

    let spec = FingerprintSpec::new().with_query();
    let (server, client) = serve(&shop, layer(h.backend().await).fingerprint(spec)).await;
    let first = client.post("/orders?coupon=1", "k-2", "a hat").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let other_query = client.post("/orders?coupon=2", "k-2", "a hat").await;
    other_query.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!((shop.started(), shop.orders()), (2, 2));
    server.stop().await;
}

/// No key is 400; methods the layer does not cover pass without one.
pub async fn missing_key_is_400_and_other_methods_pass<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let (server, client) = serve(&shop, layer(h.backend().await)).await;
    let headers = [("x-caller", "acme")];
    let missing = client
        .send(Method::POST, "/orders", &headers, "a cup")
        .await;
    missing.assert_problem(StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&missing.body).contains("Idempotency-Key missing"));
    assert_eq!(client.orders().await, 0, "GET passes without a key");
    assert_eq!(shop.started(), 0);
    server.stop().await;
}

/// Keys up to `max_key_len` bytes (255 by default) pass, longer are 400.
pub async fn bound_key_length<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let (server, client) = serve(&shop, layer(h.backend().await)).await;
    let longest = "a".repeat(255);
    assert_eq!(
        client.post("/orders", &longest, "x").await.status,
        StatusCode::CREATED
    );
    let quoted = format!("\"{longest}\"");
    assert!(client.post("/orders", &quoted, "x").await.replayed());
    let too_long = "b".repeat(256);
    let refused = client.post("/orders", &too_long, "x").await;
    refused.assert_problem(StatusCode::BAD_REQUEST);
    assert_eq!(shop.started(), 1);
    server.stop().await;

    let layer = layer(h.backend().await).max_key_len(8);
    let (server, client) = serve(&shop, layer).await;
    assert_eq!(
        client.post("/orders", "12345678", "x").await.status,
        StatusCode::CREATED
    );
    let refused = client.post("/orders", "123456789", "x").await;
    refused.assert_problem(StatusCode::BAD_REQUEST);
    assert_eq!(shop.started(), 2);
    server.stop().await;
}

/// One key header per request, its value at most the key limit plus two
/// quotes; an empty key is refused.
pub async fn bound_key_header<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let (server, client) = serve(&shop, layer(h.backend().await)).await;
    let twice = [
        ("x-caller", "acme"),
        ("idempotency-key", "k-3"),
        ("idempotency-key", "k-4"),
    ];
    let refused = client.send(Method::POST, "/orders", &twice, "x").await;
    refused.assert_problem(StatusCode::BAD_REQUEST);
    let huge = "k".repeat(10_000);
    client
        .post("/orders", &huge, "x")
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    let over_by_quotes = format!("\"{}\"x", "k".repeat(255));
    let refused = client.post("/orders", &over_by_quotes, "x").await;
    refused.assert_problem(StatusCode::BAD_REQUEST);
    client
        .post("/orders", "\"\"", "x")
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    assert_eq!(shop.started(), 0);
    assert_eq!(
        client.post("/orders", "k-3", "x").await.status,
        StatusCode::CREATED
    );
    server.stop().await;
}

/// A caller identity of up to 256 bytes passes; longer or empty is 400.
pub async fn bound_caller_length<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let (server, client) = serve(&shop, layer(h.backend().await)).await;
    let send = |caller: String| {
        let client = client.clone();
        async move {
            let headers = [("x-caller", caller.as_str()), ("idempotency-key", "k-5")];
            client.send(Method::POST, "/orders", &headers, "x").await
        }
    };
    assert_eq!(send("c".repeat(256)).await.status, StatusCode::CREATED);
    send("c".repeat(257))
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    send(String::new())
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    assert_eq!(shop.started(), 1);
    server.stop().await;
}

/// Request bodies up to `max_body_len` pass; longer are 413 whether the
/// length is declared or streamed, and claim nothing.
pub async fn bound_request_body<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let (server, client) = serve(&shop, layer(h.backend().await).max_body_len(1024)).await;
    let at_limit = client.post("/orders", "k-6", vec![b'a'; 1024]).await;
    assert_eq!(at_limit.status, StatusCode::CREATED);
    let declared = client.post("/orders", "k-7", vec![b'a'; 1025]).await;
    declared.assert_problem(StatusCode::PAYLOAD_TOO_LARGE);
    // Chunked: no length up front, refused as it streams in.
    let chunk = "a".repeat(600);
    let request = format!(
        "POST /orders HTTP/1.1\r\nhost: test\r\nx-caller: acme\r\nidempotency-key: k-7\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let mut stream = raw_send(server.addr, &request).await;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(shop.started(), 1);
    let small = client.post("/orders", "k-7", "a").await;
    assert_eq!(
        small.status,
        StatusCode::CREATED,
        "the refused key was not claimed"
    );
    assert!(!small.replayed());
    server.stop().await;
}

/// Response bodies up to `max_response_len` are stored; a longer one is
/// answered and stored as a 500, so the retry does not run the handler.
pub async fn bound_response_body<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let layer = layer(h.backend().await).max_response_len(1000);
    let (server, client) = serve(&shop, layer).await;
    let at_limit = client.post("/big", "k-8", "1000").await;
    assert_eq!(
        (at_limit.status, at_limit.body.len()),
        (StatusCode::CREATED, 1000)
    );
    assert!(client.post("/big", "k-8", "1000").await.replayed());
    let over = client.post("/big", "k-9", "1001").await;
    over.assert_problem(StatusCode::INTERNAL_SERVER_ERROR);
    assert!(over.expires().is_some(), "stored");
    let retry = client.post("/big", "k-9", "1001").await;
    assert!(retry.replayed());
    assert_eq!((retry.status, &retry.body), (over.status, &over.body));
    assert_eq!((shop.started(), shop.orders()), (2, 2));
    server.stop().await;
}

/// At most `per_key` requests wait on one key; the next is answered at
/// once (409 while the first runs).
pub async fn bound_waiters_per_key<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let layer = layer(h.backend().await)
        .wait(Some(Duration::from_secs(60)))
        .max_waiters(2, 1024);
    let (server, client) = serve(&shop, layer.clone()).await;
    let post = |key: &'static str| {
        let client = client.clone();
        tokio::spawn(async move { client.post("/hold", key, "a box").await })
    };
    let first = post("k-10");
    until("the first request runs", || shop.started() == 1).await;
    let waiters = [post("k-10"), post("k-10")];
    until("two requests wait", || layer.waiting() == 2).await;
    let third = client.post("/hold", "k-10", "a box").await;
    third.assert_problem(StatusCode::CONFLICT);
    assert!(third.retry_after().is_some());
    assert_eq!(layer.waiting(), 2, "the third did not wait");
    shop.open_gate();
    let first = first.await.unwrap();
    for waiter in waiters {
        assert_replay_of(&waiter.await.unwrap(), &first);
    }
    assert_eq!((layer.waiting(), shop.started(), shop.orders()), (0, 1, 1));
    server.stop().await;
}

/// At most `total` requests wait on all keys together.
pub async fn bound_waiters_in_all<H: E2eHarness>(h: &H) {
    let shop = Shop::default();
    let layer = layer(h.backend().await)
        .wait(Some(Duration::from_secs(60)))
        .max_waiters(8, 2);
    let (server, client) = serve(&shop, layer.clone()).await;
    let post = |key: &'static str| {
        let client = client.clone();
        tokio::spawn(async move { client.post("/hold", key, "a crate").await })
    };
    let firsts = [post("k-11"), post("k-12")];
    until("both first requests run", || shop.started() == 2).await;
    let waiters = [post("k-11"), post("k-12")];
    until("two requests wait", || layer.waiting() == 2).await;
    let third = client.post("/hold", "k-11", "a crate").await;
    third.assert_problem(StatusCode::CONFLICT);
    shop.open_gate();
    shop.open_gate();
    for (first, waiter) in firsts.into_iter().zip(waiters) {
        let first = first.await.unwrap();
        assert_eq!(first.status, StatusCode::CREATED);
        assert_replay_of(&waiter.await.unwrap(), &first);
    }
    assert_eq!((layer.waiting(), shop.started(), shop.orders()), (0, 2, 2));
    server.stop().await;
}
