//! A call the client retries (its first reply lost) answers what the
//! first try would have: the same script sent twice with the same nonce.

use crate::RedisOptions;
use crate::backend::RedisBackend;
use crate::test_support::RedisNode;
use idemkv::{Backend, BackendTicket, Claim, Fingerprint};
use redis::Value;
use std::time::Duration;

async fn backend(node: &RedisNode) -> RedisBackend {
    RedisOptions::new().connect(&node.url()).await.unwrap()
}

#[tokio::test]
async fn a_retried_claim_or_mark_finds_its_own_write() {
    let node = RedisNode::start().unwrap_or_else(|e| panic!("{e}"));
    let b = backend(&node).await;
    let fp = Fingerprint::of(b"x");
    let name = b.redis_key(b"k");
    let nonce = [7u8; 16];
    let claim = |nonce: [u8; 16]| {
        let (b, name) = (b.clone(), name.clone());
        async move {
            let i = b.internals();
            i.pool
                .run(&i.scripts.claim, &name, |c| {
                    c.arg(&fp.as_u128().to_le_bytes()[..])
                        .arg(60_000u64)
                        .arg(60_000u64)
                        .arg(&nonce[..]);
                })
                .await
                .unwrap()
                .value
        }
    };
    let first = claim(nonce).await;
    let retried = claim(nonce).await;
    assert_eq!(first[0], Value::Int(0), "{first:?}");
    assert_eq!(
        retried[0],
        Value::Int(0),
        "the retry is Acquired too: {retried:?}"
    );
    assert_eq!(
        first[2..],
        retried[2..],
        "same generation, claim time and lease"
    );
    let other = claim([8u8; 16]).await;
    assert_eq!(
        other[0],
        Value::Int(2),
        "another call is InProgress: {other:?}"
    );

    let mark = |nonce: [u8; 16]| {
        let b = b.clone();
        async move {
            let i = b.internals();
            let name = b.redis_key(b"m");
            i.pool
                .run(&i.scripts.mark_seen, &name, |c| {
                    c.arg(60_000u64).arg(&nonce[..]);
                })
                .await
                .unwrap()
                .value[0]
                .clone()
        }
    };
    assert_eq!(mark(nonce).await, Value::Int(0));
    assert_eq!(
        mark(nonce).await,
        Value::Int(0),
        "the retried mark is First"
    );
    assert_eq!(
        mark([9u8; 16]).await,
        Value::Int(1),
        "another mark is Duplicate"
    );
}

#[tokio::test]
async fn a_retried_complete_succeeds_once_stored_and_only_with_the_same_bytes() {
    let node = RedisNode::start().unwrap_or_else(|e| panic!("{e}"));
    let b = backend(&node).await;
    let fp = Fingerprint::of(b"x");
    let Ok(Claim::Acquired(t)) = b.claim(b"k", fp).await else {
        panic!("acquired")
    };
    let generation = t.generation().to_string();
    let complete = |response: &'static [u8]| {
        let (b, generation) = (b.clone(), generation.clone());
        async move {
            let i = b.internals();
            let name = b.redis_key(b"k");
            i.pool
                .run(&i.scripts.complete, &name, |c| {
                    c.arg(generation.as_str()).arg(response).arg(60_000u64);
                })
                .await
                .unwrap()
                .value[0]
                .clone()
        }
    };
    assert_eq!(complete(b"r").await, Value::Int(0));
    assert_eq!(
        complete(b"r").await,
        Value::Int(1),
        "already stored by this ticket"
    );
    assert_eq!(
        complete(b"other").await,
        Value::Int(-1),
        "not a retry: refused"
    );
    match b.complete(t, b"r", Duration::from_secs(60)).await {
        Ok(()) => {}
        other => panic!("the ticket's own retry is accepted: {other:?}"),
    }
}
