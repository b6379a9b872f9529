//! The Lua scripts: one per transition, each run with `EVALSHA` on the one
//! Redis key of its idempotency key, so each is atomic on that key's slot.
//!
//! The record is a hash (DESIGN.md §12 has the table):
//!
//! | field | meaning |
//! |---|---|
//! | `s` | state: `c` claimed, `d` done (completed), `n` seen mark, `t` tombstone |
//! | `g` | generation of the last claim (decimal), kept by every state but a fresh mark |
//! | `f` | request fingerprint, 16 bytes little-endian (`c`, `d`) |
//! | `a` | claimed at / completed at / seen at (unix ms) |
//! | `l` | lease end (unix ms; read in `c` only) |
//! | `x` | when the record stops being live (unix ms); `PEXPIREAT` is set to it |
//! | `r` | the response bytes (`d` only) |
//! | `o` | the nonce of the call that made a claim or mark, so a retried call recognises its own write (read in `c` and `n`) |
//!
//! Every time is the server's (`TIME` inside the script; Redis 7 replicates
//! scripts by their effects, so replicas store the primary's values). A
//! record is live while `now < x`; a tombstone, or a record past `x` not yet
//! reaped by Redis, is absent but still gives its generation to the next
//! claim. Numbers go into the hash through `string.format('%d')` (a Lua
//! number is a double: exact below 2^53, and unix microseconds are about
//! 2^51), and come back to Rust as decimal strings.

/// A script's source and SHA-1, for `EVALSHA` with an `EVAL` fallback.
pub(crate) struct Script {
    /// The Lua source, shebang first.
    pub(crate) source: &'static str,
    /// Its SHA-1, hex, as `EVALSHA` names it.
    pub(crate) sha: String,
    /// Whether it may write (and so whether `WAIT` follows it).
    pub(crate) writes: bool,
}

impl Script {
    fn new(source: &'static str, writes: bool) -> Script {
        let sha = redis::Script::new(source).get_hash().to_string();
        Script {
            source,
            sha,
            writes,
        }
    }
}

/// Every script, hashed once per backend.
pub(crate) struct Scripts {
    pub(crate) claim: Script,
    pub(crate) complete: Script,
    pub(crate) release: Script,
    pub(crate) extend: Script,
    pub(crate) get: Script,
    pub(crate) remove: Script,
    pub(crate) mark_seen: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            claim: Script::new(CLAIM, true),
            complete: Script::new(COMPLETE, true),
            release: Script::new(RELEASE, true),
            extend: Script::new(EXTEND, true),
            get: Script::new(GET, false),
            remove: Script::new(REMOVE, true),
            mark_seen: Script::new(MARK_SEEN, true),
        }
    }
}

/// The server's clock, in ms and in µs, and integer formatting.
macro_rules! prelude {
    () => {
        r"
local function clock()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), s * 1000000 + us
end
local function n(v) return string.format('%d', v) end
"
    };
}

/// ARGV: fingerprint, lease ms, retention ms, nonce.
/// Replies: `{0, now, gen, claimed_at, lease_end}` acquired,
/// `{1, now, completed_at, expires_at, response}` replay,
/// `{2, now, lease_end}` in progress, `{3, now}` mismatch.
const CLAIM: &str = concat!(
    "#!lua\n",
    prelude!(),
    r"
local key, fp, nonce = KEYS[1], ARGV[1], ARGV[4]
local lease, keep = tonumber(ARGV[2]), tonumber(ARGV[3])
local now, now_us = clock()
local h = redis.call('HMGET', key, 's', 'g', 'f', 'a', 'l', 'x', 'o')
local s = h[1]
if s and s ~= 't' and now < tonumber(h[6]) then
  -- Mismatch first: a live record of another request, or a seen mark.
  if s == 'n' or h[3] ~= fp then return {3, now} end
  if s == 'd' then return {1, now, h[4], h[6], redis.call('HGET', key, 'r')} end
  if h[7] == nonce then
    -- This very call, retried by the client after its reply was lost: the
    -- claim is ours. A write of nothing new, so that a WAIT after it covers
    -- the original write on whichever connection the retry used.
    redis.call('PEXPIREAT', key, h[6])
    return {0, now, h[2], h[4], h[5]}
  end
  if now < tonumber(h[5]) then return {2, now, h[5]} end
  -- In progress, lease passed, same request: a takeover.
end
-- Absent, expired, a tombstone or a takeover: a new generation, above the
-- key's last one (kept by records and tombstones) and at least the server's
-- clock in microseconds (for a key Redis has forgotten entirely).
local gen = now_us
local last = tonumber(h[2])
if last and last >= gen then gen = last + 1 end
local l = now + lease
local x = l + keep
-- A record in another state may hold a response: start from an empty hash.
if s and s ~= 'c' then redis.call('DEL', key) end
redis.call('HSET', key, 's', 'c', 'g', n(gen), 'f', fp, 'a', n(now), 'l', n(l), 'x', n(x), 'o', nonce)
redis.call('PEXPIREAT', key, n(x))
return {0, now, n(gen), n(now), n(l)}
"
);

/// ARGV: generation, response, retention ms.
/// Replies: `{0, now}` stored, `{1, now}` stored before by this same
/// ticket (a retried call), `{-1, now}` lease lost.
const COMPLETE: &str = concat!(
    "#!lua\n",
    prelude!(),
    r"
local key, gen, resp = KEYS[1], ARGV[1], ARGV[2]
local now = clock()
local h = redis.call('HMGET', key, 's', 'g', 'x')
if not h[1] or h[2] ~= gen or now >= tonumber(h[3]) then return {-1, now} end
if h[1] == 'd' then
  if redis.call('HGET', key, 'r') ~= resp then return {-1, now} end
  redis.call('PEXPIREAT', key, h[3])
  return {1, now}
end
if h[1] ~= 'c' then return {-1, now} end
local x = now + tonumber(ARGV[3])
-- 'l' and 'o' stay behind: a done record ignores them, and one write
-- fewer is cheaper than a tidy hash.
redis.call('HSET', key, 's', 'd', 'a', n(now), 'x', n(x), 'r', resp)
redis.call('PEXPIREAT', key, n(x))
return {0, now}
"
);

/// ARGV: generation, tombstone ms. Replies: `{0, now}` released,
/// `{-1, now}` lease lost.
const RELEASE: &str = concat!(
    "#!lua\n",
    prelude!(),
    r"
local key, gen = KEYS[1], ARGV[1]
local now = clock()
local h = redis.call('HMGET', key, 's', 'g', 'x')
if h[1] ~= 'c' or h[2] ~= gen or now >= tonumber(h[3]) then return {-1, now} end
local x = now + tonumber(ARGV[2])
redis.call('DEL', key)
redis.call('HSET', key, 's', 't', 'g', gen, 'x', n(x))
redis.call('PEXPIREAT', key, n(x))
return {0, now}
"
);

/// ARGV: generation, extension ms, retention ms. Replies:
/// `{0, now, lease_end}` extended, `{-1, now}` lease lost.
const EXTEND: &str = concat!(
    "#!lua\n",
    prelude!(),
    r"
local key, gen = KEYS[1], ARGV[1]
local now = clock()
local h = redis.call('HMGET', key, 's', 'g', 'x')
if h[1] ~= 'c' or h[2] ~= gen or now >= tonumber(h[3]) then return {-1, now} end
local l = now + tonumber(ARGV[2])
local x = l + tonumber(ARGV[3])
redis.call('HSET', key, 'l', n(l), 'x', n(x))
redis.call('PEXPIREAT', key, n(x))
return {0, now, n(l)}
"
);

/// No ARGV. Replies: `{-1, now}` absent,
/// `{0, now, gen, fingerprint, claimed_at, lease_end}` in progress,
/// `{1, now, gen, fingerprint, completed_at, expires_at, response}`
/// completed, `{2, now, gen or nil, seen_at, expires_at}` seen.
const GET: &str = concat!(
    "#!lua flags=no-writes\n",
    prelude!(),
    r"
local key = KEYS[1]
local now = clock()
local h = redis.call('HMGET', key, 's', 'g', 'f', 'a', 'l', 'x')
local s = h[1]
if not s or s == 't' or now >= tonumber(h[6]) then return {-1, now} end
if s == 'c' then return {0, now, h[2], h[3], h[4], h[5]} end
if s == 'd' then return {1, now, h[2], h[3], h[4], h[6], redis.call('HGET', key, 'r')} end
return {2, now, h[2], h[4], h[6]}
"
);

/// ARGV: tombstone ms. Replies: `{1, now}` removed a live record,
/// `{0, now}` nothing live.
const REMOVE: &str = concat!(
    "#!lua\n",
    prelude!(),
    r"
local key = KEYS[1]
local now = clock()
local h = redis.call('HMGET', key, 's', 'g', 'x')
if not h[1] or h[1] == 't' or now >= tonumber(h[3]) then return {0, now} end
redis.call('DEL', key)
if h[2] then
  local x = now + tonumber(ARGV[1])
  redis.call('HSET', key, 's', 't', 'g', h[2], 'x', n(x))
  redis.call('PEXPIREAT', key, n(x))
end
return {1, now}
"
);

/// ARGV: retention ms, nonce. Replies: `{0, now}` first, `{1, now}`
/// duplicate.
const MARK_SEEN: &str = concat!(
    "#!lua\n",
    prelude!(),
    r"
local key, nonce = KEYS[1], ARGV[2]
local now = clock()
local h = redis.call('HMGET', key, 's', 'g', 'x', 'o')
if h[1] and h[1] ~= 't' and now < tonumber(h[3]) then
  if h[1] == 'n' and h[4] == nonce then
    redis.call('PEXPIREAT', key, h[3])
    return {0, now}
  end
  return {1, now}
end
local x = now + tonumber(ARGV[1])
redis.call('DEL', key)
redis.call('HSET', key, 's', 'n', 'a', n(now), 'x', n(x), 'o', nonce)
if h[2] then redis.call('HSET', key, 'g', h[2]) end
redis.call('PEXPIREAT', key, n(x))
return {0, now}
"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_has_a_shebang_and_a_distinct_sha() {
        let s = Scripts::new();
        let all = [
            &s.claim,
            &s.complete,
            &s.release,
            &s.extend,
            &s.get,
            &s.remove,
            &s.mark_seen,
        ];
        let mut shas: Vec<&str> = all.iter().map(|s| s.sha.as_str()).collect();
        shas.sort_unstable();
        shas.dedup();
        assert_eq!(shas.len(), all.len());
        for script in all {
            assert!(script.source.starts_with("#!lua"), "{}", script.source);
            assert_eq!(script.sha.len(), 40);
            assert_eq!(script.writes, !script.source.contains("no-writes"));
        }
    }
}
