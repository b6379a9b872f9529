//! # idemkv
//!
//! An embeddable storage engine for idempotency and dedup records. Before a
//! server charges a card or creates an order it *claims* the request's
//! idempotency key; it then *completes* the key with the response, and every
//! retry of that request gets the stored response back instead of a second
//! side effect.
//!
//! ```
//! use idemkv::{Claim, Fingerprint, Store};
//!
//! # fn main() -> idemkv::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path())?;
//! let body = br#"{"amount": 500}"#;
//! let fp = Fingerprint::of(body);
//!
//! // First attempt: we own the key, so we do the work and store the answer.
//! match store.claim("tenant-1:POST /charges:6f1c", fp)? {
//!     Claim::Acquired(ticket) => store.complete(ticket, b"201 charge ch_1")?,
//!     other => panic!("a fresh key is acquired, got {other:?}"),
//! }
//!
//! // A retry of the same request gets the same bytes back; no second charge.
//! match store.claim("tenant-1:POST /charges:6f1c", fp)? {
//!     Claim::Replay(done) => assert_eq!(done.response(), b"201 charge ch_1"),
//!     other => panic!("a completed key replays, got {other:?}"),
//! }
//!
//! // The same key with a different body is refused, not guessed at.
//! let other = Fingerprint::of(br#"{"amount": 900}"#);
//! assert!(matches!(store.claim("tenant-1:POST /charges:6f1c", other)?, Claim::Mismatch));
//! # Ok(())
//! # }
//! ```
//!
//! ## Guarantees and limits
//! - Under the default [`Durability::Immediate`], an `Acquired` claim is on
//!   disk before `claim` returns, and `complete` returns only once the
//!   response is. Concurrent callers share fsyncs (group commit).
//! - Claims carry leases; a crashed owner's key is taken over after its lease
//!   with a higher fencing generation, and the old owner's late `complete` or
//!   `release` is refused with [`Error::LeaseLost`].
//! - What no store can promise: exactly-once across systems. If the process
//!   dies after the side effect but before `complete` is durable, the key
//!   stays in progress until its lease ends, and then a retry runs again.
//!
//! ## Other backends
//! [`Backend`] is the same contract as an async trait, implemented by
//! [`Store`] and by any backend that keeps the records elsewhere (a shared
//! engine such as Redis, for several instances). With the `contract-tests`
//! feature, `idemkv::contract` is the test suite every backend must pass.
//!
//! See `DESIGN.md` for the on-disk format and the crash cases.

// Outside tests, an error or an `#[expect(.., reason = "...")]` saying why
// it cannot fail (clippy.toml allows them in unit tests).
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod backend;
mod clock;
#[cfg(feature = "contract-tests")]
pub mod contract;
mod durability;
mod engine;
mod error;
mod fingerprint;
mod format;
mod index;
pub mod inspect;
#[doc(hidden)]
pub mod internals;
mod key;
mod loc;
mod log;
mod maintenance;
#[cfg(all(test, idemkv_loom))]
mod models;
mod notify;
mod observe;
mod options;
mod outcome;
mod reports;
mod retention;
mod stats;
pub mod storage;
mod store;
mod stripes;
mod sync;

pub use backend::{Backend, BackendTicket, RemoteTicket};
pub use clock::{Clock, ManualClock, SystemClock};
pub use durability::Durability;
pub use error::{Error, Result};
pub use fingerprint::Fingerprint;
pub use format::{FORMAT_VERSION, OLDEST_FORMAT_VERSION};
pub use key::{scoped_key, split_scoped_key};
pub use maintenance::{repair, verify};
pub use options::{MAX_NAMESPACES, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, Options};
pub use outcome::{Claim, Completed, Record, Seen, Ticket};
pub use reports::{CompactionReport, DamagedHint, RepairReport, RepairedFile, VerifyReport};
pub use stats::{NamespaceStats, Stats};
pub use store::Store;
