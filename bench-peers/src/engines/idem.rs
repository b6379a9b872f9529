//! idemkv, the engine this workspace measures.

use super::{Engine, Outcome, Result};
use idemkv::{Claim, Completed, Durability, Fingerprint, Options, Store, Ticket};
use std::path::Path;
use std::time::Duration;

/// An idemkv store: `Durability::Immediate` when durable, else `None`;
/// segment files preallocated (the default) when `PREALLOCATE`.
pub struct Idem<const PREALLOCATE: bool>(Store);

/// idemkv as it ships.
pub type Idemkv = Idem<true>;

/// idemkv with `Options::preallocate(false)`: segment files grow as they
/// are written.
pub type IdemkvGrowing = Idem<false>;

/// A replayed response, as idemkv hands it back.
pub struct Response(Completed);

impl AsRef<[u8]> for Response {
    fn as_ref(&self) -> &[u8] {
        self.0.response()
    }
}

impl<const PREALLOCATE: bool> Engine for Idem<PREALLOCATE> {
    type Ticket = Ticket;
    type Response = Response;

    fn open(dir: &Path, durable: bool) -> Result<Self> {
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        let store = Options::new()
            .durability(durability)
            .retention(Duration::from_secs(24 * 3600))
            .preallocate(PREALLOCATE)
            .open(dir)?;
        Ok(Idem(store))
    }

    fn claim(&self, key: &[u8], fp: u128) -> Result<Outcome<Ticket, Response>> {
        Ok(match self.0.claim(key, Fingerprint::from_u128(fp))? {
            Claim::Acquired(ticket) => Outcome::Acquired(ticket),
            Claim::Replay(done) => Outcome::Replay(Response(done)),
            Claim::InProgress { .. } => Outcome::InProgress,
            Claim::Mismatch => Outcome::Mismatch,
        })
    }

    fn complete(&self, _key: &[u8], _fp: u128, ticket: Ticket, response: &[u8]) -> Result<()> {
        Ok(self.0.complete(ticket, response)?)
    }
}
