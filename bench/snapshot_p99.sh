#!/usr/bin/env bash
# bench/snapshot_p99.sh: PUT p99 latency on a 3-node raftkv cluster with a large state machine,
# with snapshots effectively off (steady) and with a snapshot every SNAP_COUNT entries (under
# snapshot creation), on 127.0.0.1 only. The issue's target: p99 during snapshots within 2x steady.
#
#   bench/snapshot_p99.sh                 # 100k keys of 100 bytes, 64 clients, 15 s per run
#   KEYS=200000 SNAP_COUNT=2000 bench/snapshot_p99.sh
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
KEYS=${KEYS:-100000}
SNAP_COUNT=${SNAP_COUNT:-5000}
CLIENTS=${CLIENTS:-64}
DURATION=${DURATION:-15s}
PORT_BASE=${PORT_BASE:-33000}
BIN=${RAFTKV_BIN:-}
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --quiet -p raftkv-io-real)
  BIN="$ROOT/target/release/raftkv"
fi
WORK=$(mktemp -d /tmp/raftkv-snapbench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

run_case() { # run_case NAME SNAP_COUNT
  local name=$1 snap=$2 cluster="" apis="" i
  for i in 1 2 3; do cluster+="${cluster:+,}http://127.0.0.1:$((PORT_BASE + i))"; apis+="${apis:+,}http://127.0.0.1:$((PORT_BASE + 10 + i))"; done
  PIDS=()
  for i in 1 2 3; do
    "$BIN" --id "$i" --cluster "$cluster" --port $((PORT_BASE + 10 + i)) --data-dir "$WORK/$name-$i" \
      --snap-count "$snap" --catch-up-entries 1000 >"$WORK/$name-$i.log" 2>&1 &
    PIDS+=($!)
  done
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$((PORT_BASE + 11))/health" >/dev/null 2>&1 && break
    sleep 0.05
  done
  # Fill the state machine, then measure puts over the same keys.
  "$BIN" bench --endpoints "$apis" --clients 64 --total "$KEYS" --keys "$KEYS" --put-ratio 1 --progress-ms 0 >/dev/null
  "$BIN" bench --endpoints "$apis" --clients "$CLIENTS" --duration "$DURATION" --keys "$KEYS" --put-ratio 1 \
    --progress-ms 0 --json >"$WORK/$name.json"
  local snaps
  snaps=$(grep -c "start snapshot" "$WORK/$name-1.log" || true)
  python3 - "$WORK/$name.json" "$name" "$snaps" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
put = d["ops"]["put"] if "ops" in d and "put" in d["ops"] else d
print(f'{sys.argv[2]}: {json.dumps(put)[:400]} snapshots_on_node1={sys.argv[3]}')
PY
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

run_case steady 100000000
run_case snapshots "$SNAP_COUNT"
