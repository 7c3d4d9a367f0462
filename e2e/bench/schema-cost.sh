#!/usr/bin/env bash
# Publish cost with and without a message schema, in instructions (callgrind), on one
# release herald-node without Redis: N publishes of a 6-field order_update to a channel
# without a schema, then N to one with a schema for it. Counters are zeroed after start-up
# and dumped after each phase, so the numbers are the node's work per phase only.
#
#   cargo build --release -p herald-node && e2e/bench/schema-cost.sh [N] [runs]
set -euo pipefail
N=${1:-2000}
RUNS=${2:-3}
NODE=${HERALD_NODE_BIN:-${CARGO_TARGET_DIR:-target}/release/herald-node}
WORK=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
cat >"$WORK/channels.json" <<'JSON'
{"channels": [
  {"name": "plain", "access": "public"},
  {"name": "checked", "access": "public", "schemas": {"order_update": {
    "type": "object", "additionalProperties": false,
    "required": ["order_id", "status", "qty", "price", "paid", "updated_at"],
    "properties": {
      "order_id": {"type": "string", "pattern": "^PO[0-9]{8,16}$"},
      "status": {"enum": ["new", "paid", "shipped", "cancelled"]},
      "qty": {"type": "integer", "minimum": 1},
      "price": {"type": "number", "minimum": 0},
      "paid": {"type": "boolean"},
      "updated_at": {"type": "string", "maxLength": 40}}}}}
]}
JSON
publish() { # channel
  python3 - "$1" "$N" <<'PY'
import http.client, json, sys
channel, n = sys.argv[1], int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", 18391)
for i in range(n):
    body = json.dumps({"channel": channel, "type": "order_update", "data": {
        "order_id": "PO%010d" % i, "status": "paid", "qty": i % 7 + 1,
        "price": 12.5 + i, "paid": True, "updated_at": "2026-12-04T12:00:00Z"}})
    conn.request("POST", "/api/v1/publish", body,
                 {"Authorization": "Bearer bench-key-bench-key", "Content-Type": "application/json"})
    r = conn.getresponse(); r.read()
    assert r.status == 200, (r.status, channel)
PY
}
total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'; }
for run in $(seq "$RUNS"); do
  (cd "$WORK" && exec valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" \
    "$NODE" --listen 127.0.0.1:18391 --jwt-secret bench-secret-bench-secret-bench-secret \
    --api-key bench-key-bench-key --channels "$WORK/channels.json" >/dev/null 2>"$WORK/node.err") &
  PID=$!
  until ! kill -0 "$PID" 2>/dev/null || python3 -c 'import socket; socket.create_connection(("127.0.0.1", 18391))' 2>/dev/null; do sleep 0.5; done
  kill -0 "$PID" || { cat "$WORK/node.err"; exit 1; }
  publish plain >/dev/null; publish checked >/dev/null # warm up
  callgrind_control -z "$PID" >/dev/null 2>&1
  publish plain; callgrind_control --dump=plain "$PID" >/dev/null 2>&1
  callgrind_control -z "$PID" >/dev/null 2>&1
  publish checked; callgrind_control --dump=checked "$PID" >/dev/null 2>&1
  kill "$PID"; wait "$PID" 2>/dev/null || true
  plain=$(total "$(ls "$WORK"/cg.*.1)"); checked=$(total "$(ls "$WORK"/cg.*.2)")
  rm -f "$WORK"/cg.*
  awk -v p="$plain" -v c="$checked" -v n="$N" -v r="$run" 'BEGIN {
    printf "run %d: without schema %.0f instr/publish, with schema %.0f instr/publish, ratio %.3f\n",
      r, p / n, c / n, c / p }'
done
