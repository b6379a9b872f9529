//! The one error type of the crate.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in idemkv.
///
/// Each variant's `Display` text says what happened and what to do about it.
/// No variant is ever returned after a write was acknowledged and then lost:
/// errors either refuse an operation up front or report damage found on disk.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// The operating system refused a file operation. The message names the
    /// file and the operation; the kind is preserved for matching.
    Io(io::Error),
    /// The directory is already open in this process or another one.
    /// Only one `Store` may own a directory at a time.
    Locked,
    /// A file holds bytes that fail their checksum or structure checks, and
    /// they are not a torn tail left by a crash (valid records follow them, or
    /// they sit inside a sealed segment).
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the first bad byte range within `file`.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// A file was written by a format version this build does not read.
    IncompatibleFormat {
        /// The file whose header names the version.
        file: PathBuf,
        /// The version found in the file header.
        found: u32,
        /// The newest version this build reads, and the one it writes; it
        /// also reads every version back to [`OLDEST_FORMAT_VERSION`](crate::OLDEST_FORMAT_VERSION).
        supported: u32,
    },
    /// An empty key was passed; keys must be at least one byte long.
    EmptyKey,
    /// A key is longer than `Options::max_key_len`.
    KeyTooLong {
        /// Length of the key passed, in bytes.
        len: usize,
        /// The configured maximum, in bytes.
        max: usize,
    },
    /// A response is longer than `Options::max_response_len`.
    ResponseTooLarge {
        /// Length of the response passed, in bytes.
        len: usize,
        /// The configured maximum, in bytes.
        max: usize,
    },
    /// The ticket no longer owns its key: the lease passed and another caller
    /// took the key over, or the key was released or removed. Nothing was
    /// written.
    LeaseLost,
    /// An earlier write or fsync failed, so the store cannot know what reached
    /// the disk. It refuses every further write, and every read that would
    /// rest on a record not yet durable; reads of durable records still work.
    /// Drop the store and open the directory again to recover from the log.
    Poisoned,
    /// An option is out of range; the message says which and why.
    InvalidOptions(String),
    /// A remote [`Backend`](crate::Backend) could not be reached: the
    /// connection was refused or dropped before the request was sent, no
    /// primary is known, or the backend refused the call as unavailable.
    /// The backend received nothing, so nothing was recorded. Backends
    /// report a call that may have reached the server as [`Error::TimedOut`]
    /// instead. Never returned by the embedded [`Store`](crate::Store).
    Unreachable {
        /// What failed, from the backend's client.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A remote [`Backend`](crate::Backend) did not answer in time. The call
    /// may or may not have taken effect: a claim may hold the key until its
    /// lease ends, a complete may or may not be stored. Never returned by
    /// the embedded [`Store`](crate::Store).
    TimedOut {
        /// How long the caller waited for the answer.
        after: std::time::Duration,
    },
    /// A remote [`Backend`](crate::Backend) applied a write but could not
    /// confirm it is as durable as configured: fewer copies than required
    /// acknowledged it (for example a replica `WAIT` that timed out), so a
    /// failover may undo it. The write is not acknowledged: a claim that
    /// answers this is not `Acquired`, and the side effect must not start.
    /// Never returned by the embedded [`Store`](crate::Store).
    NotDurable {
        /// Copies that confirmed the write (the primary's own not counted).
        acknowledged: u32,
        /// Copies the backend is configured to require.
        required: u32,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(
                f,
                "I/O error: {e}; check the disk, permissions and free space"
            ),
            Error::Locked => f.write_str(
                "the store directory is already open (in this process or another); \
                 close the other Store or use a different directory",
            ),
            Error::Corrupt {
                file,
                offset,
                reason,
            } => write!(
                f,
                "corrupt data in {} at byte {offset}: {reason}; the file was left untouched, \
                 restore it from a backup or run repair on the directory",
                file.display()
            ),
            Error::IncompatibleFormat {
                file,
                found,
                supported,
            } => write!(
                f,
                "{} has format version {found} but this build reads versions {} to {supported}; \
                 open it with a matching idemkv version",
                file.display(),
                crate::OLDEST_FORMAT_VERSION
            ),
            Error::EmptyKey => f.write_str("the key is empty; pass a key of at least one byte"),
            Error::KeyTooLong { len, max } => write!(
                f,
                "the key is {len} bytes, longer than the maximum of {max}; \
                 hash long keys or raise Options::max_key_len"
            ),
            Error::ResponseTooLarge { len, max } => write!(
                f,
                "the response is {len} bytes, larger than the maximum of {max}; \
                 store a reference to it or raise Options::max_response_len"
            ),
            Error::LeaseLost => f.write_str(
                "this ticket lost its claim (lease taken over, released or removed); \
                 nothing was written, do not report this attempt's result as the key's result",
            ),
            Error::Poisoned => f.write_str(
                "an earlier write or fsync failed, so the store refuses writes; \
                 drop every handle and open the directory again",
            ),
            Error::InvalidOptions(why) => write!(f, "invalid options: {why}"),
            Error::Unreachable { source } => write!(
                f,
                "the idempotency backend could not be reached ({source}); nothing was recorded: \
                 do not run the side effect, answer 503 with Retry-After, and check the \
                 backend's address, network and health"
            ),
            Error::TimedOut { after } => write!(
                f,
                "the idempotency backend did not answer within {} ms, so the call may or may \
                 not have taken effect: do not run the side effect or report its result, \
                 answer 503 with Retry-After (a claim that did land stays in progress until \
                 its lease ends, then a retry takes it over); check the backend's load and \
                 the timeout",
                after.as_millis()
            ),
            Error::NotDurable {
                acknowledged,
                required,
            } => write!(
                f,
                "the idempotency backend applied the write but only {acknowledged} of \
                 {required} required replicas confirmed it, so a failover may undo it; it is \
                 not acknowledged: do not start the side effect (answer 503 with Retry-After), \
                 and after a complete expect the key to become claimable again once its lease \
                 ends; check replica health and replication lag"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Unreachable { source } => Some(&**source),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// Wraps an I/O error with the operation and path it came from, keeping its kind.
pub(crate) fn io_context(op: &str, path: &std::path::Path, e: io::Error) -> Error {
    Error::Io(io::Error::new(
        e.kind(),
        format!("{op} {}: {e}", path.display()),
    ))
}
