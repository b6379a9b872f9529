#!/usr/bin/env bash
# Claim + complete pairs/s through RedisBackend vs raw SET NX PX on a local
# 3 + 3 cluster (started and stopped by the bench). About four minutes.
# IDEMKV_BENCH_SECS (per cell, default 3) and IDEMKV_BENCH_REPS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p idemkv-redis --features test-support --bench pairs "$@"
