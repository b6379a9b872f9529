//! The claim/complete contract on Redis, start to end: starts a local
//! redis-server (installing the Debian package first when it is missing
//! and this runs as root), then walks one key through a first attempt, a
//! retry, a concurrent duplicate, a reused key and a crashed owner.
//!
//! `cargo run -p idemkv-redis --example redis_demo --features test-support`

use idemkv::{Backend, BackendTicket, Claim, Fingerprint};
use idemkv_redis::RedisOptions;
use idemkv_redis::test_support::RedisNode;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = RedisNode::start()?;
    println!("redis-server on {} (appendfsync always)", node.url());
    let redis = RedisOptions::new()
        .prefix("demo:")
        .lease(Duration::from_millis(500))
        .connect(&node.url())
        .await?;
    println!(
        "durability: fsync always = {}",
        redis.durability().fsync_always()
    );

    let key = idemkv::scoped_key(["acme", "POST /charges", "k-1"]);
    let body = br#"{"amount": 500}"#;
    let fp = Fingerprint::of(body);
    let day = Duration::from_secs(24 * 3600);

    let Claim::Acquired(ticket) = redis.claim(&key, fp).await? else {
        return Err("a fresh key is acquired".into());
    };
    println!(
        "first attempt: acquired, generation {}",
        ticket.generation()
    );
    match redis.claim(&key, fp).await? {
        Claim::InProgress {
            lease_expires_at_ms,
        } => {
            println!("a concurrent duplicate: 409, in progress until {lease_expires_at_ms}")
        }
        other => return Err(format!("expected InProgress, got {other:?}").into()),
    }
    redis.complete(ticket, b"201 charge ch_1", day).await?;
    if let Claim::Replay(done) = redis.claim(&key, fp).await? {
        println!(
            "a retry: replayed {:?}",
            String::from_utf8_lossy(done.response())
        );
    }
    let other = Fingerprint::of(br#"{"amount": 900}"#);
    if let Claim::Mismatch = redis.claim(&key, other).await? {
        println!("the key reused with another body: 422");
    }

    // An owner that crashes: its lease ends, a retry takes over with a
    // higher generation, and the old owner's late completion is refused.
    let key = idemkv::scoped_key(["acme", "POST /orders", "k-2"]);
    let Claim::Acquired(crashed) = redis.claim(&key, fp).await? else {
        return Err("a fresh key is acquired".into());
    };
    let waited = redis.claim_wait(&key, fp, Duration::from_secs(5)).await?;
    let Claim::Acquired(next) = waited else {
        return Err(format!("expected a takeover, got {waited:?}").into());
    };
    println!(
        "owner crashed: taken over after its lease, generation {} > {}",
        next.generation(),
        crashed.generation()
    );
    match redis.complete(crashed, b"late", day).await {
        Err(idemkv::Error::LeaseLost) => println!("the old owner's late complete: LeaseLost"),
        other => return Err(format!("expected LeaseLost, got {other:?}").into()),
    }
    redis.complete(next, b"201 order o_1", day).await?;
    println!("done; the server is stopped on exit");
    Ok(())
}
