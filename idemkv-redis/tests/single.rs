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

/// The record as DESIGN.md §12 lays it out: a 65-byte header (state,
/// then big-endian u64 generation, 16 fingerprint bytes, three u64 times,
/// 16 nonce bytes) and the response after it.
#[derive(Debug)]
struct Stored {
    state: u8,
    generation: u64,
    fingerprint: [u8; 16],
    at: u64,
    lease_end: u64,
    end_of_life: u64,
    response: Vec<u8>,
}

fn stored(raw: &mut redis::Connection, name: &[u8]) -> Stored {
    let v: Vec<u8> = raw.get(name).unwrap();
    assert!(v.len() >= 65, "a record is at least 65 bytes: {v:?}");
    let u64_at = |i: usize| u64::from_be_bytes(v[i..i + 8].try_into().unwrap());
    Stored {
        state: v[0],
        generation: u64_at(1),
        fingerprint: v[9..25].try_into().unwrap(),
        at: u64_at(25),
        lease_end: u64_at(33),
        end_of_life: u64_at(41),
        response: v[65..].to_vec(),
    }
}

fn expire_time(raw: &mut redis::Connection, name: &[u8]) -> u64 {
    let at: i64 = redis::cmd("PEXPIRETIME").arg(name).query(raw).unwrap();
    u64::try_from(at).expect("the record has an expiry")
}

/// The record is one string under `prefix + tag + key`, with the
/// documented layout, and its expiry at lease end + retention, then at the
/// completed record's expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_string_per_key_with_the_documented_layout_and_expiry() {
    let h = RedisHarness::single();
    let retention = Duration::from_secs(100);
    let b = h
        .connect(h.options().prefix("app:").lease(LONG).retention(retention))
        .await;
    let mut raw = h.node().connection().unwrap();
    let fp = Fingerprint::of(b"req");
    let t = acquire(&b, b"k1", fp).await;
    assert_eq!(b.redis_key(b"k1"), b"app:k1");
    let claimed = stored(&mut raw, b"app:k1");
    assert_eq!(claimed.state, b'c');
    assert_eq!(claimed.generation, t.generation());
    assert_eq!(claimed.fingerprint, fp.as_u128().to_le_bytes());
    assert_eq!(claimed.at, t.claimed_at_ms());
    assert_eq!(claimed.lease_end, t.lease_expires_at_ms());
    assert_eq!(claimed.end_of_life, t.lease_expires_at_ms() + 100_000);
    assert!(claimed.response.is_empty());
    assert_eq!(expire_time(&mut raw, b"app:k1"), claimed.end_of_life);

    let extended = b.extend_lease(&t, LONG * 2).await.unwrap();
    let after = stored(&mut raw, b"app:k1");
    assert_eq!((after.state, after.lease_end), (b'c', extended));
    assert_eq!(after.end_of_life, extended + 100_000);
    assert_eq!(expire_time(&mut raw, b"app:k1"), after.end_of_life);

    let generation = t.generation();
    b.complete(t, b"done", Duration::from_secs(50))
        .await
        .unwrap();
    let Some(Record::Completed(done)) = b.get(b"k1").await.unwrap() else {
        panic!("completed")
    };
    let completed = stored(&mut raw, b"app:k1");
    assert_eq!(completed.state, b'd');
    assert_eq!(completed.generation, generation);
    assert_eq!(completed.fingerprint, fp.as_u128().to_le_bytes());
    assert_eq!(completed.at, done.completed_at_ms());
    assert_eq!(completed.end_of_life, done.expires_at_ms());
    assert_eq!(completed.response, b"done");
    assert_eq!(expire_time(&mut raw, b"app:k1"), done.expires_at_ms());

    // A mark on a key never claimed has generation 0, shown as none.
    assert_eq!(b.mark_seen(b"m", LONG).await.unwrap(), idemkv::Seen::First);
    let mark = stored(&mut raw, &b.redis_key(b"m"));
    assert_eq!((mark.state, mark.generation), (b'n', 0));
    assert_eq!(expire_time(&mut raw, &b.redis_key(b"m")), mark.end_of_life);
    let inspected = b.inspect(b"m").await.unwrap().expect("a live mark");
    assert_eq!(inspected.generation, None);
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
    let tombstone = stored(&mut raw, &name);
    assert_eq!(
        (tombstone.state, tombstone.generation),
        (b't', g1n),
        "a tombstone keeps the generation"
    );
    assert_eq!(expire_time(&mut raw, &name), tombstone.end_of_life);
    let g2 = acquire(&b, b"k", fp).await;
    assert!(g2.generation() > g1n);
    let g2n = g2.generation();
    assert!(b.remove(b"k").await.unwrap());
    let g3 = acquire(&b, b"k", fp).await;
    assert!(g3.generation() > g2n);

    // A generation far ahead of the server's clock (as after a failover to
    // a node whose clock is behind): the next claim is still above it.
    let ahead: u64 = g3.generation() + 10_000_000_000_000;
    let _: () = raw.setrange(&name, 1, &ahead.to_be_bytes()[..]).unwrap();
    b.release(g3)
        .await
        .expect_err("the ticket's generation changed");
    let _: () = raw.setrange(&name, 0, "t").unwrap();
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

/// A key under the prefix that is not a record (a short string, a long
/// one that does not start with a state, a hash) is a typed error for
/// every call, never a panic, and is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_key_under_the_prefix_is_a_typed_error() {
    let h = RedisHarness::single();
    let b = h.connect(h.options()).await;
    let mut raw = h.node().connection().unwrap();
    let long = "x".repeat(80);
    let _: () = raw.set(b.redis_key(b"short"), "not a record").unwrap();
    let _: () = raw.set(b.redis_key(b"long"), &long).unwrap();
    let _: () = raw.hset(b.redis_key(b"hash"), "s", "c").unwrap();
    let wrong_type = |what: &str, r: idemkv::Result<String>| match r {
        Err(idemkv::Error::Io(e)) => assert!(e.to_string().contains("WRONGTYPE"), "{what}: {e}"),
        other => panic!("{what}: expected Io(WRONGTYPE), got {other:?}"),
    };
    let fp = Fingerprint::of(b"x");
    for key in [&b"short"[..], b"long", b"hash"] {
        let what = String::from_utf8_lossy(key).into_owned();
        let claim = b.claim(key, fp).await.map(|c| format!("{c:?}"));
        wrong_type(&format!("claim {what}"), claim);
        let get = b.get(key).await.map(|r| format!("{r:?}"));
        wrong_type(&format!("get {what}"), get);
        let mark = b.mark_seen(key, LONG).await.map(|m| format!("{m:?}"));
        wrong_type(&format!("mark_seen {what}"), mark);
        let removed = b.remove(key).await.map(|r| format!("{r:?}"));
        wrong_type(&format!("remove {what}"), removed);
    }
    let kept: String = raw.get(b.redis_key(b"short")).unwrap();
    assert_eq!(kept, "not a record");
    let kept: String = raw.get(b.redis_key(b"long")).unwrap();
    assert_eq!(kept, long);
    let kept: String = raw.hget(b.redis_key(b"hash"), "s").unwrap();
    assert_eq!(kept, "c");
}
