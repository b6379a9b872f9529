//! The shared contract suite on one local redis-server per row, and what
//! is particular to Redis: key names and hash tags, binary keys,
//! generations across release, removal and expiry, the `NOSCRIPT`
//! fallback.

mod common;

use common::RedisHarness;

idemkv::contract_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    harness = RedisHarness::single();
}

use idemkv::{Backend, BackendTicket, Claim, Fingerprint, Record};
use idemkv_redis::{HashTag, RedisBackend};
use redis::Commands;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(600);

async fn acquire(b: &RedisBackend, key: &[u8], fp: Fingerprint) -> idemkv::RemoteTicket {
    match b.claim(key, fp).await {
        Ok(Claim::Acquired(t)) => t,
        other => panic!("claim of {key:?}: expected Acquired, got {other:?}"),
    }
}

/// The record is one hash under `prefix + tag + key`, with the documented
/// fields, and `PEXPIREAT` set to lease end + retention, then to the
/// completed record's expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hash_per_key_with_the_documented_layout_and_expiry() {
    let h = RedisHarness::single();
    let retention = Duration::from_secs(100);
    let b = h
        .connect(h.options().prefix("app:").lease(LONG).retention(retention))
        .await;
    let mut raw = h.node().connection().unwrap();
    let fp = Fingerprint::of(b"req");
    let t = acquire(&b, b"k1", fp).await;
    assert_eq!(b.redis_key(b"k1"), b"app:k1");
    let fields: std::collections::HashMap<String, Vec<u8>> = raw.hgetall("app:k1").unwrap();
    let text = |f: &str| String::from_utf8(fields[f].clone()).unwrap();
    assert_eq!(text("s"), "c");
    assert_eq!(text("g"), t.generation().to_string());
    assert_eq!(fields["f"], fp.as_u128().to_le_bytes());
    assert_eq!(text("a"), t.claimed_at_ms().to_string());
    assert_eq!(text("l"), t.lease_expires_at_ms().to_string());
    let expire_at: i64 = redis::cmd("PEXPIRETIME")
        .arg("app:k1")
        .query(&mut raw)
        .unwrap();
    assert_eq!(expire_at as u64, t.lease_expires_at_ms() + 100_000);

    b.complete(t, b"done", Duration::from_secs(50))
        .await
        .unwrap();
    let Some(Record::Completed(done)) = b.get(b"k1").await.unwrap() else {
        panic!("completed")
    };
    let expire_at: i64 = redis::cmd("PEXPIRETIME")
        .arg("app:k1")
        .query(&mut raw)
        .unwrap();
    assert_eq!(expire_at as u64, done.expires_at_ms());
    let state: String = raw.hget("app:k1", "s").unwrap();
    let at: String = raw.hget("app:k1", "a").unwrap();
    assert_eq!(
        (state.as_str(), at),
        ("d", done.completed_at_ms().to_string())
    );
    let response: Vec<u8> = raw.hget("app:k1", "r").unwrap();
    assert_eq!(response, b"done");
}

/// Keys are bytes: braces, NUL, CRLF and invalid UTF-8 are stored and
/// replayed under exactly those bytes, with every hash tag option.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_keys_with_every_hash_tag_option() {
    let h = RedisHarness::single();
    let keys: [&[u8]; 4] = [b"a{b}c", b"}{", b"nul\0crlf\r\n", &[0xff, 0xfe, b'{', 0x80]];
    for tag in [
        HashTag::None,
        HashTag::Digest,
        HashTag::Fixed(b"t1".to_vec()),
    ] {
        let b = h.connect(h.options().hash_tag(tag.clone())).await;
        for key in keys {
            let fp = Fingerprint::of(key);
            let t = acquire(&b, key, fp).await;
            b.complete(t, key, LONG).await.unwrap();
            match b.claim(key, fp).await {
                Ok(Claim::Replay(done)) => assert_eq!(done.response(), key),
                other => panic!("{tag:?} {key:?}: expected Replay, got {other:?}"),
            }
            let name = b.redis_key(key);
            assert!(name.ends_with(key));
            let mut raw = h.node().connection().unwrap();
            let exists: bool = raw.exists(&name).unwrap();
            assert!(exists, "{tag:?}: the record is under {name:?}");
        }
    }
    let b = h
        .connect(h.options().prefix("p:").hash_tag(HashTag::Digest))
        .await;
    let name = String::from_utf8(b.redis_key(b"a{b}c")).unwrap();
    assert!(name.starts_with("p:{") && name.ends_with("}a{b}c") && name.len() == 3 + 16 + 1 + 5);
    let b = h
        .connect(
            h.options()
                .prefix("p:")
                .hash_tag(HashTag::Fixed(b"x".to_vec())),
        )
        .await;
    assert_eq!(b.redis_key(b"k"), b"p:{x}k");
}

/// Generations rise across release, removal and expiry, and a key's
/// remembered generation wins over the server's clock: a tombstone whose
/// generation is ahead of the clock is still outranked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_never_repeat_and_rise_above_the_last_one() {
    let h = RedisHarness::single();
    let b = h.connect(h.options().lease(LONG).retention(LONG)).await;
    let mut raw = h.node().connection().unwrap();
    let fp = Fingerprint::of(b"x");
    let name = b.redis_key(b"k");

    let g1 = acquire(&b, b"k", fp).await;
    let g1n = g1.generation();
    b.release(g1).await.unwrap();
    let (state, g): (String, String) = redis::cmd("HMGET")
        .arg(&name)
        .arg("s")
        .arg("g")
        .query(&mut raw)
        .unwrap();
    assert_eq!(
        (state.as_str(), g),
        ("t", g1n.to_string()),
        "a tombstone keeps g"
    );
    let g2 = acquire(&b, b"k", fp).await;
    assert!(g2.generation() > g1n);
    let g2n = g2.generation();
    assert!(b.remove(b"k").await.unwrap());
    let g3 = acquire(&b, b"k", fp).await;
    assert!(g3.generation() > g2n);

    // A generation far ahead of the server's clock (as after a failover to
    // a node whose clock is behind): the next claim is still above it.
    let ahead: u64 = g3.generation() + 10_000_000_000_000;
    let _: () = raw.hset(&name, "g", ahead.to_string()).unwrap();
    b.release(g3)
        .await
        .expect_err("the ticket's generation changed");
    let _: () = raw.hset(&name, "s", "t").unwrap();
    let g4 = acquire(&b, b"k", fp).await;
    assert_eq!(g4.generation(), ahead + 1);
    assert!(b.remove(b"k").await.unwrap());

    // Expired records: the server's clock in microseconds takes over.
    let short = h
        .connect(
            h.options()
                .lease(Duration::from_millis(50))
                .retention(Duration::from_millis(50)),
        )
        .await;
    let first = acquire(&short, b"e", fp).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(short.get(b"e").await.unwrap(), None, "expired");
    let second = acquire(&short, b"e", fp).await;
    assert!(second.generation() > first.generation());
    assert!(
        second.generation() > 1_600_000_000_000_000,
        "unix microseconds"
    );
}

/// A server that lost its script cache (restart, `SCRIPT FLUSH`, a
/// failover to a node that never ran them) gets the script by `EVAL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noscript_falls_back_to_eval() {
    let h = RedisHarness::single();
    let b = h.connect(h.options()).await;
    let fp = Fingerprint::of(b"x");
    let t = acquire(&b, b"k", fp).await;
    let mut raw = h.node().connection().unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut raw).unwrap();
    b.complete(t, b"after flush", LONG).await.unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut raw).unwrap();
    match b.claim(b"k", fp).await {
        Ok(Claim::Replay(done)) => assert_eq!(done.response(), b"after flush"),
        other => panic!("expected Replay, got {other:?}"),
    }
}

/// A key of another type under the prefix is a typed error, never a
/// panic, and the foreign key is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_key_under_the_prefix_is_a_typed_error() {
    let h = RedisHarness::single();
    let b = h.connect(h.options()).await;
    let mut raw = h.node().connection().unwrap();
    let _: () = raw.set(b.redis_key(b"k"), "not a record").unwrap();
    match b.claim(b"k", Fingerprint::of(b"x")).await {
        Err(idemkv::Error::Io(e)) => assert!(e.to_string().contains("WRONGTYPE"), "{e}"),
        other => panic!("expected Io(WRONGTYPE), got {other:?}"),
    }
    let kept: String = raw.get(b.redis_key(b"k")).unwrap();
    assert_eq!(kept, "not a record");
}
