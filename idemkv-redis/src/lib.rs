//! # idemkv-redis
//!
//! The [`idemkv::Backend`] contract (claim a request's idempotency key
//! before the side effect, complete it with the response, replay it to
//! retries; leases, fencing generations, fingerprints) on a Redis server or
//! a Redis Cluster, for services that run several instances.
//!
//! ```no_run
//! use idemkv::{Backend, Claim, Fingerprint};
//! use idemkv_redis::RedisOptions;
//! use std::time::Duration;
//!
//! # async fn run() -> idemkv::Result<()> {
//! let redis = RedisOptions::new()
//!     .prefix("payments:")
//!     .lease(Duration::from_secs(30))
//!     .connect_cluster(&["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
//!     .await?;
//!
//! let key = idemkv::scoped_key(["acme", "POST /charges", "k-1"]);
//! let body = br#"{"amount": 500}"#;
//! match redis.claim(&key, Fingerprint::of(body)).await? {
//!     Claim::Acquired(ticket) => {
//!         let response = b"201 ch_1".to_vec(); // the side effect, once
//!         redis.complete(ticket, &response, Duration::from_secs(24 * 3600)).await?;
//!     }
//!     Claim::Replay(done) => println!("retry: {:?}", done.response()),
//!     Claim::InProgress { lease_expires_at_ms } => println!("409 until {lease_expires_at_ms}"),
//!     Claim::Mismatch => println!("422: key reused for another request"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The example needs a server; `cargo run -p idemkv-redis --example redis_demo
//! --features test-support` starts one and runs the same flow. With the
//! `test-support` feature, [`test_support`] starts a local server or a
//! 3 + 3 cluster in one call, for tests.
//!
//! ## How
//! - **One Redis key per idempotency key** (`prefix`, an optional
//!   [`HashTag`], the key's bytes; keys are binary-safe), whose value is
//!   one string: a 65-byte header, then the response (DESIGN.md §12 has
//!   the bytes); and **one Lua
//!   script per transition** (`EVALSHA`, loaded with `EVAL` on `NOSCRIPT`),
//!   so every transition is atomic on the key's slot: the fingerprint check
//!   first, then replay, in progress, or a claim or takeover; `complete`,
//!   `release` and `extend_lease` only if the stored generation is the
//!   ticket's (never an unconditional `SET`).
//! - **The server's clock**: lease ends, expiries and generations come from
//!   `TIME` inside the scripts, never from the instance, so clock skew
//!   between instances cannot hand a key to two owners.
//! - **Generations** never repeat for a key and rise with every takeover: a
//!   new one is the server's clock in microseconds, raised above the key's
//!   last generation, which the record and, after a release or removal, a
//!   tombstone keep (DESIGN.md §12).
//! - **Expiry** by Redis itself: `PXAT` at lease end + retention for a
//!   claim, at its retention for a completed record or a mark.
//! - **`claim_wait`** polls with a doubling pause (bounded by the owner's
//!   lease end and the caller's timeout).
//!
//! ## Durability: what an acknowledgement means
//! Nothing is reported `Acquired`, `Seen::First` or a successful `complete`
//! that was not recorded as durably as configured:
//! - [`FsyncCheck::Require`] (default) refuses to connect unless every node
//!   runs `appendonly yes` + `appendfsync always`, so an acknowledged write
//!   was fsynced by its primary.
//! - [`RedisOptions::wait_for_replicas`] adds `WAIT n timeout` after each
//!   write: acknowledged only once `n` replicas have it, so it survives a
//!   failover; else [`Error::NotDurable`](idemkv::Error::NotDurable). The
//!   write was applied on the primary but is unconfirmed: do not run the
//!   side effect; a claim then holds the key until its lease ends.
//!
//! The README's table says what survives a crash and a failover in each
//! configuration, with the measured figures.
//!
//! ## Errors
//! | what happened | error |
//! |---|---|
//! | connection refused, no node for the slot, `CLUSTERDOWN`, `TRYAGAIN`, `MASTERDOWN`, `LOADING`, `READONLY`, `OOM`, `BUSY`, `MISCONF` (after the cluster client's retries) | [`Unreachable`](idemkv::Error::Unreachable), the `redis::RedisError` as its source: nothing was recorded |
//! | no answer within the command timeout, or the connection lost after the call was sent | [`TimedOut`](idemkv::Error::TimedOut): it may have been applied |
//! | `WAIT` confirmed fewer replicas than required | [`NotDurable`](idemkv::Error::NotDurable): applied on the primary, unconfirmed |
//! | the ticket no longer owns the key | [`LeaseLost`](idemkv::Error::LeaseLost) |
//! | empty or too long key, too large response | `EmptyKey`, `KeyTooLong`, `ResponseTooLarge`, before anything is sent |
//! | bad options, or a node without `appendfsync always` under `Require` | [`InvalidOptions`](idemkv::Error::InvalidOptions), at connect |
//! | anything else (`WRONGTYPE` on a foreign key under the prefix, a reply of the wrong shape) | [`Io`](idemkv::Error::Io) |
//!
//! A retried call (after a lost reply, the cluster client retries) finds
//! its own claim or mark by a per-call nonce and answers as the first try
//! would have, so a retry never turns an applied claim into `InProgress`
//! or an applied mark into `Duplicate`.

mod backend;
mod conn;
mod durability;
mod options;
#[cfg(all(test, feature = "test-support"))]
mod retry_tests;
mod scripts;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use backend::{Inspected, RedisBackend};
pub use durability::{DurabilityReport, NodeDurability};
pub use idemkv::RemoteTicket;
pub use options::{FsyncCheck, HashTag, MAX_RESPONSE_LEN_LIMIT, RedisOptions, WaitFor};
