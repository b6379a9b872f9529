//! The async calls: the same engine steps as the blocking ones, run on the
//! polling thread (they take only short locks and never wait for the disk),
//! then a future that resolves once the answer is durable; the fsync runs on
//! the store's service thread for the record's stream, shared by every
//! caller waiting at the time.

use super::Store;
use super::claim_wait::{Attempt, Wait};
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::notify::key_waiters::Fired;
use crate::outcome::{Claim, Seen, Ticket};
use std::time::Duration;

impl Store {
    /// [`claim`](Store::claim) for async callers. The future is `Send`,
    /// needs no particular runtime, and resolves once the answer is durable
    /// (under `Durability::Immediate`); the fsync runs on the store's own
    /// thread, shared by every caller waiting at the time, so no executor
    /// thread blocks on the disk.
    pub async fn claim_async(
        &self,
        key: impl AsRef<[u8]>,
        fingerprint: Fingerprint,
    ) -> Result<Claim> {
        let e = self.engine();
        e.settle_async(e.claim(key.as_ref(), fingerprint)?).await
    }

    /// [`complete`](Store::complete) for async callers; resolves once the
    /// response is durable. See [`claim_async`](Store::claim_async).
    pub async fn complete_async(&self, ticket: Ticket, response: impl AsRef<[u8]>) -> Result<()> {
        let e = self.engine();
        e.settle_async(e.complete(ticket, response.as_ref(), e.retention_ms)?)
            .await
    }

    /// [`complete_with_retention`](Store::complete_with_retention) for async
    /// callers.
    pub async fn complete_with_retention_async(
        &self,
        ticket: Ticket,
        response: impl AsRef<[u8]>,
        retention: Duration,
    ) -> Result<()> {
        let e = self.engine();
        let retention_ms = crate::clock::duration_ms(retention);
        e.settle_async(e.complete(ticket, response.as_ref(), retention_ms)?)
            .await
    }

    /// [`release`](Store::release) for async callers; resolves once the
    /// release is durable.
    pub async fn release_async(&self, ticket: Ticket) -> Result<()> {
        let e = self.engine();
        e.settle_async(e.release(ticket)?).await
    }

    /// [`mark_seen`](Store::mark_seen) for async callers; resolves once the
    /// answer is durable.
    pub async fn mark_seen_async(&self, key: impl AsRef<[u8]>, retain: Duration) -> Result<Seen> {
        let e = self.engine();
        let retain_ms = crate::clock::duration_ms(retain);
        e.settle_async(e.mark_seen(key.as_ref(), retain_ms)?).await
    }

    /// [`claim_wait`](Store::claim_wait) for async callers: the task sleeps,
    /// holding no thread, until the owner's write wakes it, its lease
    /// passes, or `timeout` does. Deadlines are kept by the store's own
    /// thread, so no runtime timer is needed.
    pub async fn claim_wait_async(
        &self,
        key: impl AsRef<[u8]>,
        fingerprint: Fingerprint,
        timeout: Duration,
    ) -> Result<Claim> {
        let wait = Wait::new(self.engine(), key.as_ref(), fingerprint, timeout)?;
        loop {
            let registration = wait
                .engine
                .waiters
                .register(wait.hash, std::task::Waker::noop().clone());
            let answer = match wait.attempt()? {
                Attempt::Answer(answer) => answer,
                Attempt::Sleep { retry, in_progress } => {
                    let fired = Fired {
                        interest: registration.interest(),
                        service: &wait.engine.service,
                        deadline: retry,
                        timer_set: false,
                    }
                    .await;
                    if !wait.timed_out(fired, retry) {
                        continue;
                    }
                    in_progress
                }
            };
            drop(registration);
            return wait.engine.settle_async(answer).await;
        }
    }
}
