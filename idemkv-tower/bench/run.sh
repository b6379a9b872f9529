#!/usr/bin/env bash
# requests/s and p50/p99 latency of the axum_server example (release build)
# through idemkv-tower's layer, with the embedded durable store
# (Durability::Immediate) or with Redis, against the same server without the
# layer, on this machine, runs alternated. Load: wrk, 20 % of requests retry an
# earlier key (retries.lua).
#
#   idemkv-tower/bench/run.sh            # 3 reps x 10 s per side
#   REPS=5 SECONDS_PER_RUN=20 CONNECTIONS=128 idemkv-tower/bench/run.sh
#   MODES="with nofsync without" idemkv-tower/bench/run.sh
#   MODES="with redis without" idemkv-tower/bench/run.sh
#
# Modes: `with` (the layer, durable store), `without` (no layer, no store),
# `nofsync` (the layer, store with Durability::None: what fsync costs),
# `redis` (the layer over idemkv-redis's RedisBackend: the same routes from
# idemkv-redis's `axum_redis` example, on a redis-server this script starts
# for the run, `appendonly yes` + `appendfsync always`, on a port of its own
# (REDIS_PORT), and kills by its PID after the run).
#
# Bounded in time (each run is SECONDS_PER_RUN) and in space: the store
# (or the redis-server's directory) is a temporary directory that is removed
# after every run, and a watchdog stops the server if it passes MAX_STORE_MB.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=idemkv-tower/bench

reps="${REPS:-3}"
secs="${SECONDS_PER_RUN:-10}"
conns="${CONNECTIONS:-64}"
threads="${THREADS:-1}"
max_store_mb="${MAX_STORE_MB:-2048}"
port="${PORT:-38417}"
redis_port="${REDIS_PORT:-38419}"
modes="${MODES:-with without}"

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk
fi
cargo build --release --example axum_server
server_bin=target/release/examples/axum_server
redis_bin=target/release/examples/axum_redis
if [[ " $modes " == *" redis "* ]]; then
  if ! command -v redis-server >/dev/null; then
    apt-get update -qq && apt-get install -y -qq redis-server redis-tools
  fi
  cargo build --release -p idemkv-redis --example axum_redis
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/idemkv-tower-bench.XXXXXX")"
server_pid=""
watchdog_pid=""
redis_pid=""
stop_server() {
  if [ -n "$watchdog_pid" ]; then
    kill "$watchdog_pid" 2>/dev/null || true
    wait "$watchdog_pid" 2>/dev/null || true
  fi
  watchdog_pid=""
  if [ -n "$server_pid" ]; then
    kill -INT "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
  if [ -n "$redis_pid" ]; then
    kill -KILL "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  redis_pid=""
}
cleanup() { stop_server; rm -rf "$work"; }
trap cleanup EXIT

start_redis() { # in $1, a fresh directory
  mkdir -p "$1"
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$1" --daemonize no \
    --save "" --appendonly yes --appendfsync always --logfile "$1/redis.log" &
  redis_pid=$!
  for _ in $(seq 100); do
    if redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG; then return; fi
    sleep 0.1
  done
  echo "redis-server did not answer on port $redis_port" >&2
  exit 1
}

start_server() { # $1: with | nofsync | without | redis
  local store="$work/store"
  rm -rf "$store"
  if [ "$1" = redis ]; then
    start_redis "$store"
    "$redis_bin" --redis "redis://127.0.0.1:$redis_port" --addr "127.0.0.1:$port" --wait 10 \
      >"$work/server.log" 2>&1 &
  elif [ "$1" = with ]; then
    "$server_bin" --dir "$store" --addr "127.0.0.1:$port" --wait 10 >"$work/server.log" 2>&1 &
  elif [ "$1" = nofsync ]; then
    "$server_bin" --dir "$store" --addr "127.0.0.1:$port" --wait 10 --no-fsync >"$work/server.log" 2>&1 &
  else
    "$server_bin" --no-idempotency --addr "127.0.0.1:$port" >"$work/server.log" 2>&1 &
  fi
  server_pid=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
  done
  (
    while sleep 1; do
      mb=$(du -sm "$store" 2>/dev/null | cut -f1 || echo 0)
      if [ "${mb:-0}" -gt "$max_store_mb" ]; then
        echo "store passed $max_store_mb MB: stopping the server" >&2
        kill -INT "$server_pid" 2>/dev/null
        exit 0
      fi
    done
  ) &
  watchdog_pid=$!
}

# Latency as wrk prints it (850.00us, 1.23ms, 2.00s) in ms.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
    printf "%.2f", n }'
}

results="$work/results"
: >"$results"
echo "wrk -t$threads -c$conns -d${secs}s --latency -s $here/retries.lua, $reps reps, alternated"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq "$reps"); do
  for mode in $modes; do
    start_server "$mode"
    out="$(IDEM_RUN="r$rep$mode" wrk -t"$threads" -c"$conns" -d"${secs}s" --latency \
      -s "$here/retries.lua" "http://127.0.0.1:$port/v1/orders")"
    store_mb=$(du -sm "$work/store" 2>/dev/null | cut -f1 || echo 0)
    stop_server
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    errors=$(awk '/Socket errors/ {print $0}' <<<"$out")
    printf '%s\t%s\t%s\t%s\t%s\n' "$mode" "$rps" "$p50" "$p99" "${non2xx:-0}" >>"$results"
    printf 'rep %s %-7s %10s req/s  p50 %7s ms  p99 %7s ms  non-2xx %s  store %s MB %s\n' \
      "$rep" "$mode" "$rps" "$p50" "$p99" "${non2xx:-0}" "${store_mb:-0}" "$errors"
  done
done

echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "median [min, max] over $reps runs"
for mode in $modes; do
  for col in 2 3 4; do
    awk -F'\t' -v m="$mode" -v c="$col" '$1 == m {print $c}' "$results" | sort -g | awk '
      { v[NR] = $1 }
      END { printf "%s [%s, %s]\t", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[1], v[NR] }'
  done | awk -v m="$mode" '{ printf "%-7s req/s %s %s %s  p50 ms %s %s %s  p99 ms %s %s %s\n", m, $1, $2, $3, $4, $5, $6, $7, $8, $9 }'
done
