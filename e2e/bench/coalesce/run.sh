#!/usr/bin/env bash
# run.sh NODE_BIN CHANNEL N PORT: instructions (callgrind, whole process, all threads)
# of one herald-node run that serves N publishes to CHANNEL of channels.json over one
# keep-alive HTTP connection, then drains and exits. With REDIS_URL set, on that Redis.
# See docs/benchmarks.md ("Coalescing: publish cost").
set -euo pipefail
bin=$1 channel=$2 n=$3 port=$4
dir=$(dirname "$0")
out=$(mktemp -d)/callgrind.out
HERALD_DRAIN_WINDOW=0s valgrind --tool=callgrind --callgrind-out-file=$out "$bin" \
  --listen 127.0.0.1:$port --jwt-secret bench-secret-0123456789 --api-key bench-api-key-0123456789 \
  --channels "$dir/channels.json" ${REDIS_URL:+--redis-url $REDIS_URL} >/dev/null 2>"$out.log" &
pid=$!
for _ in $(seq 600); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
python3 "$dir/publish.py" $port $channel $n
sleep 0.5
kill -TERM $pid; wait $pid || true
grep -E "^summary|^totals" $out | head -1 | awk '{print $2}'
rm -rf "$(dirname "$out")"
