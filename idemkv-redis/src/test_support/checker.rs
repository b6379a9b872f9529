//! Checks a log of acknowledged transitions against what the store holds
//! afterwards (after a failover): every acknowledged claim must still be
//! claimed or completed with at least its generation, every acknowledged
//! completion must replay the same bytes with its generation.

use crate::Inspected;
use idemkv::Record;
use std::collections::HashMap;

/// One acknowledged transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ack {
    /// `claim` answered `Acquired` with this generation.
    Claimed {
        /// The idempotency key.
        key: Vec<u8>,
        /// The ticket's generation.
        generation: u64,
    },
    /// `complete` of that ticket answered `Ok`.
    Completed {
        /// The idempotency key.
        key: Vec<u8>,
        /// The ticket's generation.
        generation: u64,
        /// The response stored.
        response: Vec<u8>,
    },
}

impl Ack {
    /// The key the transition was on.
    pub fn key(&self) -> &[u8] {
        match self {
            Ack::Claimed { key, .. } | Ack::Completed { key, .. } => key,
        }
    }
}

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    /// Acknowledged claims checked.
    pub claims: usize,
    /// Of those, claims whose key is absent, or holds a lower generation.
    pub claims_lost: usize,
    /// Acknowledged completions checked.
    pub completes: usize,
    /// Of those, completions whose key does not replay the same bytes with
    /// the same generation.
    pub completes_lost: usize,
    /// A few of the losses, described.
    pub examples: Vec<String>,
}

impl Losses {
    /// Acknowledged transitions lost, claims and completions together.
    pub fn lost(&self) -> usize {
        self.claims_lost + self.completes_lost
    }
}

/// Compares every acknowledgement with `found`, the state of its key read
/// afterwards (`None`: absent). A key missing from `found` counts as absent.
pub fn check(acks: &[Ack], found: &HashMap<Vec<u8>, Option<Inspected>>) -> Losses {
    let mut losses = Losses::default();
    for ack in acks {
        let state = found.get(ack.key()).cloned().flatten();
        let problem = match ack {
            Ack::Claimed { generation, .. } => {
                losses.claims += 1;
                let kept = state.as_ref().is_some_and(|s| {
                    matches!(s.record, Record::InProgress { .. } | Record::Completed(_))
                        && s.generation.is_some_and(|g| g >= *generation)
                });
                (!kept).then(|| {
                    losses.claims_lost += 1;
                    format!("claim gen {generation}")
                })
            }
            Ack::Completed {
                generation,
                response,
                ..
            } => {
                losses.completes += 1;
                let kept = state.as_ref().is_some_and(|s| match &s.record {
                    Record::Completed(done) => {
                        done.response() == response.as_slice() && s.generation == Some(*generation)
                    }
                    _ => false,
                });
                (!kept).then(|| {
                    losses.completes_lost += 1;
                    format!("complete gen {generation}")
                })
            }
        };
        if let Some(what) = problem
            && losses.examples.len() < 5
        {
            losses.examples.push(format!(
                "{} of {:?}: found {state:?}",
                what,
                String::from_utf8_lossy(ack.key())
            ));
        }
    }
    losses
}

#[cfg(test)]
mod tests {
    use super::*;
    use idemkv::{Completed, Fingerprint};

    fn claimed(g: u64) -> Option<Inspected> {
        Some(Inspected {
            record: Record::InProgress {
                fingerprint: Fingerprint::of(b"f"),
                claimed_at_ms: 1,
                lease_expires_at_ms: 2,
            },
            generation: Some(g),
        })
    }

    fn completed(g: u64, response: &[u8]) -> Option<Inspected> {
        Some(Inspected {
            record: Record::Completed(Completed::new(
                response.to_vec(),
                Fingerprint::of(b"f"),
                1,
                2,
            )),
            generation: Some(g),
        })
    }

    fn claim(key: &str, g: u64) -> Ack {
        Ack::Claimed {
            key: key.into(),
            generation: g,
        }
    }

    fn complete(key: &str, g: u64, r: &[u8]) -> Ack {
        Ack::Completed {
            key: key.into(),
            generation: g,
            response: r.to_vec(),
        }
    }

    #[test]
    fn nothing_lost_when_every_ack_is_there() {
        let acks = [claim("a", 5), claim("b", 7), complete("b", 7, b"r")];
        let found = HashMap::from([
            (b"a".to_vec(), claimed(5)),
            (b"b".to_vec(), completed(7, b"r")),
        ]);
        let l = check(&acks, &found);
        assert_eq!((l.claims, l.completes, l.lost()), (2, 1, 0), "{l:?}");
        // A later takeover (higher generation) keeps the claim.
        let found = HashMap::from([(b"a".to_vec(), claimed(9))]);
        assert_eq!(check(&[claim("a", 5)], &found).lost(), 0);
    }

    #[test]
    fn every_kind_of_loss_is_caught() {
        let acks = [
            claim("absent", 5),
            claim("older", 5),
            claim("seen", 5),
            complete("reverted", 7, b"r"),
            complete("other-bytes", 7, b"r"),
            complete("other-gen", 7, b"r"),
            complete("gone", 7, b"r"),
        ];
        let found = HashMap::from([
            (b"absent".to_vec(), None),
            (b"older".to_vec(), claimed(4)),
            (
                b"seen".to_vec(),
                Some(Inspected {
                    record: Record::Seen {
                        seen_at_ms: 1,
                        expires_at_ms: 2,
                    },
                    generation: Some(5),
                }),
            ),
            (b"reverted".to_vec(), claimed(7)),
            (b"other-bytes".to_vec(), completed(7, b"x")),
            (b"other-gen".to_vec(), completed(8, b"r")),
        ]);
        let l = check(&acks, &found);
        assert_eq!((l.claims_lost, l.completes_lost), (3, 4), "{l:?}");
        assert_eq!(l.lost(), 7);
        assert_eq!(l.examples.len(), 5);
    }
}
