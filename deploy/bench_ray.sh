#!/usr/bin/env bash
# Throughput and p99 of `gga serve` against `gga serve --ray` with 1 and 2 model replicas, on one
# machine, one shared PostgreSQL store: the figures of docs/performance.md ("Scale-out on Ray").
#
#   RAY_ADDRESS=127.0.0.1:6379 GGA_DATABASE_URL=postgresql+psycopg://... \
#     deploy/bench_ray.sh [CLIENTS] [SECONDS] [OUT_DIR]
#
# Needs a running Ray cluster (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start --head
# --node-ip-address=127.0.0.1` keeps it on loopback) and Redis (GGA_REDIS_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-32}
SECONDS_PER_RUN=${2:-20}
OUT=${3:-bench-ray}
PORT=${GGA_BENCH_PORT:-18700}
: "${RAY_ADDRESS:?set RAY_ADDRESS to the running cluster}"
: "${GGA_DATABASE_URL:?set GGA_DATABASE_URL to the shared PostgreSQL store}"
export GGA_REDIS_URL=${GGA_REDIS_URL:-redis://127.0.0.1:6379/0}
export GGA_RATE_LIMIT=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0
mkdir -p "$OUT"

echo "== plain gga serve"
gga bench overload --clients "$CLIENTS" --protocols v1 --seconds "$SECONDS_PER_RUN" --no-pin \
  --set "GGA_DATABASE_URL=$GGA_DATABASE_URL" --set GGA_TORCH_THREADS=1 --json "$OUT/plain.json"

for replicas in 1 2; do
  echo "== gga serve --ray --replicas $replicas"
  GGA_PORT=$PORT GGA_HOST=127.0.0.1 gga serve --ray --replicas "$replicas" \
    --ray-address "$RAY_ADDRESS" > "$OUT/serve-ray-$replicas.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    grep -q "replicas ready" "$OUT/serve-ray-$replicas.log" && break
    kill -0 "$pid" 2>/dev/null || { tail -20 "$OUT/serve-ray-$replicas.log"; exit 1; }
    sleep 1
  done
  gga bench overload --url "http://127.0.0.1:$PORT" --clients "$CLIENTS" --protocols v1 \
    --seconds "$SECONDS_PER_RUN" --no-pin --json "$OUT/ray-$replicas.json"
  kill -TERM "$pid"
  wait "$pid"
done
