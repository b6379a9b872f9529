//! The embedded store behind the [`Backend`] trait: each call hands back
//! the future of the store's own async method, so code generic over the
//! trait runs on it at the same speed as the direct calls.

use super::Store;
use crate::backend::Backend;
use crate::clock::duration_ms;
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::outcome::{Claim, Record, Seen, Ticket};
use std::future::Future;
use std::time::Duration;

/// The embedded store behind the trait: each method is the matching async
/// method of [`Store`] (`claim_async`, `claim_wait_async`,
/// `complete_with_retention_async`, ...), so a call through the trait costs
/// what the direct call does. Durability is the store's
/// [`Durability`](crate::Durability): under the default `Immediate` every
/// answer resolves once it is fsynced.
impl Backend for Store {
    type Ticket = Ticket;

    fn claim(
        &self,
        key: &[u8],
        fingerprint: Fingerprint,
    ) -> impl Future<Output = Result<Claim>> + Send {
        self.claim_async(key, fingerprint)
    }

    fn claim_wait(
        &self,
        key: &[u8],
        fingerprint: Fingerprint,
        timeout: Duration,
    ) -> impl Future<Output = Result<Claim>> + Send {
        self.claim_wait_async(key, fingerprint, timeout)
    }

    fn complete(
        &self,
        ticket: Ticket,
        response: &[u8],
        retention: Duration,
    ) -> impl Future<Output = Result<()>> + Send {
        self.complete_with_retention_async(ticket, response, retention)
    }

    fn release(&self, ticket: Ticket) -> impl Future<Output = Result<()>> + Send {
        self.release_async(ticket)
    }

    fn extend_lease(
        &self,
        ticket: &Ticket,
        by: Duration,
    ) -> impl Future<Output = Result<u64>> + Send {
        let e = self.engine();
        async move {
            e.settle_async(e.extend_lease(ticket, duration_ms(by))?)
                .await
        }
    }

    fn get(&self, key: &[u8]) -> impl Future<Output = Result<Option<Record>>> + Send {
        let e = self.engine();
        async move { e.settle_async(e.get(key)?).await }
    }

    fn remove(&self, key: &[u8]) -> impl Future<Output = Result<bool>> + Send {
        let e = self.engine();
        async move { e.settle_async(e.remove(key)?).await }
    }

    fn mark_seen(&self, key: &[u8], retain: Duration) -> impl Future<Output = Result<Seen>> + Send {
        self.mark_seen_async(key, retain)
    }

    fn max_response_len(&self) -> usize {
        Store::max_response_len(self)
    }
}
