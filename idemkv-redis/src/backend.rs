//! [`RedisBackend`]: the `idemkv::Backend` contract on Redis.

use crate::conn::Pool;
use crate::durability::{self, DurabilityReport};
use crate::options::{HashTag, RedisOptions};
use crate::scripts::Scripts;
use idemkv::{
    Backend, BackendTicket, Claim, Completed, Error, Fingerprint, Record, RemoteTicket, Result,
    Seen,
};
use redis::{Cmd, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest duration a call passes to a script, in ms (100 years):
/// longer ones are cut to it, so that every time in a script stays an exact
/// Lua number.
const MAX_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// The idempotency contract on a Redis server or a Redis Cluster.
///
/// Cheap to clone (the connections are shared). Every transition is one
/// Lua script on the key's one Redis key; see the crate docs for the
/// guarantees and the error mapping, and [`RedisOptions`] for the settings.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    options: RedisOptions,
    pool: Pool,
    scripts: Scripts,
    durability: DurabilityReport,
    lease_ms: u64,
    keep_ms: u64,
    tombstone_ms: u64,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("options", &self.inner.options)
            .field("durability", &self.inner.durability)
            .finish_non_exhaustive()
    }
}

/// Borrowed internals, for the crate's tests.
#[cfg(all(test, feature = "test-support"))]
pub(crate) struct Internals<'a> {
    pub(crate) pool: &'a Pool,
    pub(crate) scripts: &'a Scripts,
}

/// A record as [`RedisBackend::inspect`] finds it: what
/// [`Backend::get`] returns, and the generation stored with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspected {
    /// The record.
    pub record: Record,
    /// The generation of the key's last claim; `None` for a seen mark on a
    /// key that was never claimed.
    pub generation: Option<u64>,
}

impl RedisBackend {
    /// Connects to one server with the default [`RedisOptions`].
    pub async fn connect(url: &str) -> Result<RedisBackend> {
        RedisOptions::new().connect(url).await
    }

    /// Connects to a cluster with the default [`RedisOptions`].
    pub async fn connect_cluster<S: AsRef<str>>(nodes: &[S]) -> Result<RedisBackend> {
        RedisOptions::new().connect_cluster(nodes).await
    }

    pub(crate) async fn open(
        options: RedisOptions,
        urls: &[&str],
        cluster: bool,
    ) -> Result<RedisBackend> {
        let pool = Pool::open(&options, urls, cluster).await?;
        let durability = durability::check(&options, &pool, urls, cluster).await?;
        let inner = Inner {
            lease_ms: ms(options.lease),
            keep_ms: ms(options.retention),
            tombstone_ms: ms(options.tombstone()).max(1),
            options,
            pool,
            scripts: Scripts::new(),
            durability,
        };
        Ok(RedisBackend {
            inner: Arc::new(inner),
        })
    }

    /// The options the backend was connected with.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }

    /// What the durability check found at connect.
    pub fn durability(&self) -> &DurabilityReport {
        &self.inner.durability
    }

    /// The Redis key name of an idempotency key: the prefix, the hash tag,
    /// the key's bytes.
    pub fn redis_key(&self, key: &[u8]) -> Vec<u8> {
        let o = &self.inner.options;
        let mut name = Vec::with_capacity(o.prefix.len() + key.len() + 20);
        name.extend_from_slice(&o.prefix);
        match &o.hash_tag {
            HashTag::None => {}
            HashTag::Digest => {
                let digest = Fingerprint::of(key).as_u128() as u64;
                name.push(b'{');
                name.extend_from_slice(format!("{digest:016x}").as_bytes());
                name.push(b'}');
            }
            HashTag::Fixed(tag) => {
                name.push(b'{');
                name.extend_from_slice(tag);
                name.push(b'}');
            }
        }
        name.extend_from_slice(key);
        name
    }

    /// The key's record and its stored generation, for checks and
    /// diagnostics (the failover test compares it with its log of
    /// acknowledgements). `None` if the key is absent, expired, released
    /// or removed.
    pub async fn inspect(&self, key: &[u8]) -> Result<Option<Inspected>> {
        let name = self.name(key)?;
        let reply = self
            .inner
            .pool
            .run(&self.inner.scripts.get, &name, |_| {})
            .await?;
        parse_get(reply.value)
    }

    /// The connections and scripts, for the crate's tests.
    #[cfg(all(test, feature = "test-support"))]
    pub(crate) fn internals(&self) -> Internals<'_> {
        Internals {
            pool: &self.inner.pool,
            scripts: &self.inner.scripts,
        }
    }

    /// The Redis key name of a valid idempotency key.
    fn name(&self, key: &[u8]) -> Result<Vec<u8>> {
        let max = self.inner.options.max_key_len;
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if key.len() > max {
            return Err(Error::KeyTooLong {
                len: key.len(),
                max,
            });
        }
        Ok(self.redis_key(key))
    }

    /// Fails with `NotDurable` if `WAIT` was sent and fewer replicas than
    /// required confirmed the write.
    fn confirmed(&self, replicas: Option<i64>) -> Result<()> {
        match (self.inner.options.wait, replicas) {
            (Some(w), Some(n)) if n < i64::from(w.replicas) => Err(Error::NotDurable {
                acknowledged: u32::try_from(n.max(0)).unwrap_or(0),
                required: w.replicas,
            }),
            _ => Ok(()),
        }
    }

    /// One claim, and the server's clock when it ran.
    async fn claim_once(&self, key: &[u8], fp: Fingerprint) -> Result<(Claim<RemoteTicket>, u64)> {
        let name = self.name(key)?;
        let i = &self.inner;
        let fp_bytes = fp.as_u128().to_le_bytes();
        let nonce = nonce();
        let reply = i
            .pool
            .run(&i.scripts.claim, &name, |c| {
                c.arg(&fp_bytes[..])
                    .arg(i.lease_ms)
                    .arg(i.keep_ms)
                    .arg(&nonce[..]);
            })
            .await?;
        let mut v = Fields::new(reply.value);
        let code = v.int()?;
        let now = v.uint()?;
        let claim = match code {
            0 => {
                self.confirmed(reply.replicas)?;
                let (generation, at, lease_end) = (v.uint()?, v.uint()?, v.uint()?);
                Claim::Acquired(RemoteTicket::new(key, fp, generation, at, lease_end))
            }
            1 => {
                let (at, expires) = (v.uint()?, v.uint()?);
                Claim::Replay(Completed::new(v.bytes()?, fp, at, expires))
            }
            2 => Claim::InProgress {
                lease_expires_at_ms: v.uint()?,
            },
            3 => Claim::Mismatch,
            other => return Err(bad_reply(&format!("claim answered code {other}"))),
        };
        Ok((claim, now))
    }

    /// Runs an owner's script (`complete`, `release`, `extend_lease`) and
    /// maps a refusal to `LeaseLost`.
    async fn owned(
        &self,
        ticket: &RemoteTicket,
        script: &crate::scripts::Script,
        args: impl Fn(&mut Cmd),
    ) -> Result<Fields> {
        let name = self.name(ticket.key())?;
        let generation = ticket.generation().to_string();
        let reply = self
            .inner
            .pool
            .run(script, &name, |c| {
                c.arg(generation.as_str());
                args(c);
            })
            .await?;
        let mut v = Fields::new(reply.value);
        if v.int()? < 0 {
            return Err(Error::LeaseLost);
        }
        self.confirmed(reply.replicas)?;
        v.uint()?; // the server's clock
        Ok(v)
    }
}

impl Backend for RedisBackend {
    type Ticket = RemoteTicket;

    async fn claim(&self, key: &[u8], fingerprint: Fingerprint) -> Result<Claim<RemoteTicket>> {
        Ok(self.claim_once(key, fingerprint).await?.0)
    }

    /// Polls: claims, and while the answer is `InProgress` sleeps (2 ms
    /// doubling to 50 ms by default, never past the owner's lease end or
    /// the deadline) and claims again; at the deadline answers the last
    /// `InProgress`. Polling needs no subscription that a failover or a
    /// reconnect could silently drop.
    async fn claim_wait(
        &self,
        key: &[u8],
        fingerprint: Fingerprint,
        timeout: Duration,
    ) -> Result<Claim<RemoteTicket>> {
        let deadline = Instant::now() + timeout;
        let mut pause = self.inner.options.poll_min;
        loop {
            let (answer, server_now) = self.claim_once(key, fingerprint).await?;
            let Claim::InProgress {
                lease_expires_at_ms,
            } = answer
            else {
                return Ok(answer);
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(answer);
            }
            let to_lease_end =
                Duration::from_millis(lease_expires_at_ms.saturating_sub(server_now) + 1);
            let wake = (now + pause.min(to_lease_end)).min(deadline);
            tokio::time::sleep_until(wake.into()).await;
            pause = (pause * 2).min(self.inner.options.poll_max);
        }
    }

    async fn complete(
        &self,
        ticket: RemoteTicket,
        response: &[u8],
        retention: Duration,
    ) -> Result<()> {
        let max = self.inner.options.max_response_len;
        if response.len() > max {
            return Err(Error::ResponseTooLarge {
                len: response.len(),
                max,
            });
        }
        let script = &self.inner.scripts.complete;
        self.owned(&ticket, script, |c| {
            c.arg(response).arg(ms(retention));
        })
        .await
        .map(drop)
    }

    async fn release(&self, ticket: RemoteTicket) -> Result<()> {
        let tombstone = self.inner.tombstone_ms;
        let script = &self.inner.scripts.release;
        self.owned(&ticket, script, |c| {
            c.arg(tombstone);
        })
        .await
        .map(drop)
    }

    async fn extend_lease(&self, ticket: &RemoteTicket, by: Duration) -> Result<u64> {
        let keep = self.inner.keep_ms;
        let script = &self.inner.scripts.extend;
        let mut v = self
            .owned(ticket, script, |c| {
                c.arg(ms(by)).arg(keep);
            })
            .await?;
        let end = v.uint()?;
        ticket.set_lease_expires_at_ms(end);
        Ok(end)
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Record>> {
        Ok(self.inspect(key).await?.map(|i| i.record))
    }

    async fn remove(&self, key: &[u8]) -> Result<bool> {
        let name = self.name(key)?;
        let i = &self.inner;
        let reply = i
            .pool
            .run(&i.scripts.remove, &name, |c| {
                c.arg(i.tombstone_ms);
            })
            .await?;
        let removed = Fields::new(reply.value).int()? == 1;
        if removed {
            self.confirmed(reply.replicas)?;
        }
        Ok(removed)
    }

    async fn mark_seen(&self, key: &[u8], retain: Duration) -> Result<Seen> {
        let name = self.name(key)?;
        let i = &self.inner;
        let nonce = nonce();
        let reply = i
            .pool
            .run(&i.scripts.mark_seen, &name, |c| {
                c.arg(ms(retain)).arg(&nonce[..]);
            })
            .await?;
        match Fields::new(reply.value).int()? {
            0 => {
                self.confirmed(reply.replicas)?;
                Ok(Seen::First)
            }
            1 => Ok(Seen::Duplicate),
            other => Err(bad_reply(&format!("mark_seen answered code {other}"))),
        }
    }

    fn max_response_len(&self) -> usize {
        self.inner.options.max_response_len
    }
}

/// Parses the `get` script's reply.
fn parse_get(value: Vec<Value>) -> Result<Option<Inspected>> {
    let mut v = Fields::new(value);
    let code = v.int()?;
    v.uint()?; // the server's clock
    if code < 0 {
        return Ok(None);
    }
    let generation = v.opt_uint()?;
    let record = match code {
        0 => Record::InProgress {
            fingerprint: v.fingerprint()?,
            claimed_at_ms: v.uint()?,
            lease_expires_at_ms: v.uint()?,
        },
        1 => {
            let fp = v.fingerprint()?;
            let (at, expires) = (v.uint()?, v.uint()?);
            Record::Completed(Completed::new(v.bytes()?, fp, at, expires))
        }
        2 => Record::Seen {
            seen_at_ms: v.uint()?,
            expires_at_ms: v.uint()?,
        },
        other => return Err(bad_reply(&format!("get answered code {other}"))),
    };
    Ok(Some(Inspected { record, generation }))
}

/// A script's reply, read field by field.
struct Fields(std::vec::IntoIter<Value>);

impl Fields {
    fn new(values: Vec<Value>) -> Fields {
        Fields(values.into_iter())
    }

    fn next(&mut self) -> Result<Value> {
        self.0
            .next()
            .ok_or_else(|| bad_reply("a script's reply is shorter than expected"))
    }

    fn int(&mut self) -> Result<i64> {
        match self.next()? {
            Value::Int(n) => Ok(n),
            Value::BulkString(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad_reply("a number field is not a decimal integer")),
            other => Err(bad_reply(&format!("expected a number, got {other:?}"))),
        }
    }

    fn uint(&mut self) -> Result<u64> {
        u64::try_from(self.int()?).map_err(|_| bad_reply("a time or generation is negative"))
    }

    fn opt_uint(&mut self) -> Result<Option<u64>> {
        match self.0.as_slice().first() {
            Some(Value::Nil) => {
                self.next()?;
                Ok(None)
            }
            _ => self.uint().map(Some),
        }
    }

    fn bytes(&mut self) -> Result<Vec<u8>> {
        match self.next()? {
            Value::BulkString(b) => Ok(b),
            other => Err(bad_reply(&format!("expected bytes, got {other:?}"))),
        }
    }

    fn fingerprint(&mut self) -> Result<Fingerprint> {
        let bytes: [u8; 16] = self
            .bytes()?
            .try_into()
            .map_err(|_| bad_reply("a stored fingerprint is not 16 bytes"))?;
        Ok(Fingerprint::from_u128(u128::from_le_bytes(bytes)))
    }
}

fn bad_reply(what: &str) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "unexpected reply from Redis ({what}); is another program writing keys under this \
             backend's prefix?"
        ),
    ))
}

/// Whole milliseconds, cut to [`MAX_MS`].
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).min(MAX_MS)
}

/// 16 bytes unique to one call: a retried call finds its own claim or mark
/// by it. A digest of a per-process seed (process id, start time) and a
/// counter.
fn nonce() -> [u8; 16] {
    static SEED: OnceLock<[u8; 16]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let pid = std::process::id();
        let here = &COUNTER as *const AtomicU64 as usize;
        Fingerprint::of_parts(&[
            &nanos.to_le_bytes(),
            &pid.to_le_bytes(),
            &here.to_le_bytes(),
        ])
        .as_u128()
        .to_le_bytes()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Fingerprint::of_parts(&[seed, &n.to_le_bytes()])
        .as_u128()
        .to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_differ_and_durations_are_cut() {
        let a = nonce();
        let b = nonce();
        assert_ne!(a, b);
        assert_eq!(ms(Duration::from_millis(1500)), 1500);
        assert_eq!(ms(Duration::MAX), MAX_MS);
    }

    #[test]
    fn get_replies_parse_and_bad_ones_are_typed_errors() {
        let fp = Fingerprint::of(b"x");
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let claimed = vec![
            Value::Int(0),
            Value::Int(5),
            bulk("1700000000000001"),
            Value::BulkString(fp.as_u128().to_le_bytes().to_vec()),
            bulk("10"),
            bulk("20"),
        ];
        let got = parse_get(claimed).unwrap().unwrap();
        assert_eq!(got.generation, Some(1_700_000_000_000_001));
        assert_eq!(
            got.record,
            Record::InProgress {
                fingerprint: fp,
                claimed_at_ms: 10,
                lease_expires_at_ms: 20
            }
        );
        let seen = vec![
            Value::Int(2),
            Value::Int(5),
            Value::Nil,
            bulk("1"),
            bulk("9"),
        ];
        assert_eq!(parse_get(seen).unwrap().unwrap().generation, None);
        assert_eq!(
            parse_get(vec![Value::Int(-1), Value::Int(5)]).unwrap(),
            None
        );
        for bad in [
            vec![],
            vec![Value::Int(0), Value::Int(5), bulk("x")],
            vec![Value::Int(9), Value::Int(5), bulk("1")],
            vec![Value::Int(0), Value::Int(5), bulk("1"), bulk("short")],
        ] {
            match parse_get(bad.clone()) {
                Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData),
                other => panic!("{bad:?}: expected a typed error, got {other:?}"),
            }
        }
    }
}
