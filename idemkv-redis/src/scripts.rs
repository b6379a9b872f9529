//! The Lua scripts: one per transition, each run with `EVALSHA` on the one
//! Redis key of its idempotency key, so each is atomic on that key's slot.
//!
//! The record is one string, a fixed 65-byte header and, in a completed
//! record, the response after it (DESIGN.md §12 has the table):
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0 | state | `c` claimed, `d` done (completed), `n` seen mark, `t` tombstone |
//! | 1-8 | generation | of the key's last claim; 0 in a mark on a key never claimed |
//! | 9-24 | fingerprint | 16 bytes little-endian (`c`, `d`; zeros otherwise) |
//! | 25-32 | at | claimed at / completed at / seen at (unix ms) |
//! | 33-40 | lease end | unix ms (read in `c` only) |
//! | 41-48 | end of life | unix ms: live while `now` is below it; the key's `PXAT` |
//! | 49-64 | nonce | of the call that made a claim or mark (read in `c` and `n`) |
//! | 65- | response | `d` only |
//!
//! Numbers are unsigned 64-bit big-endian (`struct` format `I8`), exact as
//! Lua numbers (doubles) below 2^53: unix microseconds are about 2^51.
//! Every write of a record is one `SET .. PXAT`, which Redis replicates and
//! appends as one command.
//!
//! Every time is the server's (`TIME` inside the script; Redis 7 replicates
//! scripts by their effects, so replicas store the primary's values). A
//! record is live while `now < x`; a tombstone, or a record past `x` not yet
//! reaped by Redis, is absent but still gives its generation to the next
//! claim.

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

/// The server's clock, the record's format, and its reader.
macro_rules! prelude {
    () => {
        r"
local function clock()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), s * 1000000 + us
end
local F = '>c1I8c16I8I8I8c16'
local Z = string.rep('\0', 16)
local function decode(v)
  if #v < 65 or not string.find('cdnt', string.sub(v, 1, 1), 1, true) then
    error({err = 'WRONGTYPE the key holds a string that is not an idemkv record'})
  end
  return struct.unpack(F, v)
end
local function read(key)
  local v = redis.call('GET', key)
  if v then return v, decode(v) end
end
"
    };
}

/// ARGV: fingerprint, lease ms, retention ms, nonce.
/// Replies: `{0, now, gen, claimed_at, lease_end}` acquired,
/// `{1, now, completed_at, expires_at, response}` replay,
/// `{2, now, lease_end}` in progress, `{3, now}` mismatch.
///
/// The common case, a key Redis does not hold, is one `SET .. NX .. GET`:
/// it writes the claim with the clock's generation, or answers the record
/// that is there without writing.
const CLAIM: &str = concat!(
    "#!lua\n",
    prelude!(),
    r"
local key, fp, nonce = KEYS[1], ARGV[1], ARGV[4]
local now, now_us = clock()
local l = now + tonumber(ARGV[2])
local x = l + tonumber(ARGV[3])
local v = redis.call('SET', key, struct.pack(F, 'c', now_us, fp, now, l, x, nonce), 'NX', 'PXAT', x, 'GET')
if not v then return {0, now, now_us, now, l} end
local s, g, f, a, ol, ox, o = decode(v)
if s ~= 't' and now < ox then
  -- Mismatch first: a live record of another request, or a seen mark.
  if s == 'n' or f ~= fp then return {3, now} end
  if s == 'd' then return {1, now, a, ox, string.sub(v, 66)} end
  if o == nonce then
    -- This very call, retried by the client after its reply was lost: the
    -- claim is ours. A write of nothing new, so that a WAIT after it covers
    -- the original write on whichever connection the retry used.
    redis.call('PEXPIREAT', key, ox)
    return {0, now, g, a, ol}
  end
  if now < ol then return {2, now, ol} end
  -- In progress, lease passed, same request: a takeover.
end
-- Expired (not yet reaped), a tombstone or a takeover: a new generation,
-- above the key's last one and at least the clock in microseconds.
local gen = now_us
if g >= gen then gen = g + 1 end
redis.call('SET', key, struct.pack(F, 'c', gen, fp, now, l, x, nonce), 'PXAT', x)
return {0, now, gen, now, l}
"
);

/// ARGV: generation, response, retention ms.
/// Replies: `{0, now}` stored, `{1, now}` stored before by this same
/// ticket (a retried call), `{-1, now}` lease lost.
const COMPLETE: &str = concat!(
    "#!lua\n",
    prelude!(),
    r"
local key, gen, resp = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local now = clock()
local v, s, g, f, a, l, x, o = read(key)
if not v or g ~= gen or now >= x then return {-1, now} end
if s == 'd' then
  if string.sub(v, 66) ~= resp then return {-1, now} end
  redis.call('PEXPIREAT', key, x)
  return {1, now}
end
if s ~= 'c' then return {-1, now} end
x = now + tonumber(ARGV[3])
-- The lease end and the nonce stay behind: a done record ignores them.
redis.call('SET', key, struct.pack(F, 'd', g, f, now, l, x, o) .. resp, 'PXAT', x)
return {0, now}
"
);

/// ARGV: generation, tombstone ms. Replies: `{0, now}` released,
/// `{-1, now}` lease lost.
const RELEASE: &str = concat!(
    "#!lua\n",
    prelude!(),
    r"
local key, gen = KEYS[1], tonumber(ARGV[1])
local now = clock()
local v, s, g, f, a, l, x = read(key)
if s ~= 'c' or g ~= gen or now >= x then return {-1, now} end
x = now + tonumber(ARGV[2])
redis.call('SET', key, struct.pack(F, 't', g, Z, 0, 0, x, Z), 'PXAT', x)
return {0, now}
"
);

/// ARGV: generation, extension ms, retention ms. Replies:
/// `{0, now, lease_end}` extended, `{-1, now}` lease lost.
const EXTEND: &str = concat!(
    "#!lua\n",
    prelude!(),
    r"
local key, gen = KEYS[1], tonumber(ARGV[1])
local now = clock()
local v, s, g, f, a, l, x, o = read(key)
if s ~= 'c' or g ~= gen or now >= x then return {-1, now} end
l = now + tonumber(ARGV[2])
x = l + tonumber(ARGV[3])
redis.call('SET', key, struct.pack(F, 'c', g, f, a, l, x, o), 'PXAT', x)
return {0, now, l}
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
local v, s, g, f, a, l, x = read(key)
if not v or s == 't' or now >= x then return {-1, now} end
if s == 'c' then return {0, now, g, f, a, l} end
if s == 'd' then return {1, now, g, f, a, x, string.sub(v, 66)} end
return {2, now, g > 0 and g, a, x}
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
local v, s, g, f, a, l, x = read(key)
if not v or s == 't' or now >= x then return {0, now} end
if g > 0 then
  x = now + tonumber(ARGV[1])
  redis.call('SET', key, struct.pack(F, 't', g, Z, 0, 0, x, Z), 'PXAT', x)
else
  redis.call('DEL', key)
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
local v, s, g, f, a, l, x, o = read(key)
if v and s ~= 't' and now < x then
  if s == 'n' and o == nonce then
    redis.call('PEXPIREAT', key, x)
    return {0, now}
  end
  return {1, now}
end
x = now + tonumber(ARGV[1])
redis.call('SET', key, struct.pack(F, 'n', g or 0, Z, now, 0, x, nonce), 'PXAT', x)
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
