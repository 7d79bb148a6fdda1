#!/usr/bin/env bash
# Another client's login latency under a pre-authentication whitespace flood (issue 23 item 3,
# docs/performance.md §9): for each rate in RATES, a fresh release host with
# `max_unauthenticated_bytes_per_s = RATE` (0 = no limit), then
#   quiet:   one loadgen login run (concurrency 1) from 127.0.0.1
#   flooded: the same run while another loadgen process (`--flood 64 --source 127.0.0.2`, the
#            per-address maximum of unauthenticated connections) sends whitespace before login
#            as fast as the host takes it
# and then the flood alone (its server CPU with nothing else running). Rounds alternate the
# rates (ABAB), so both see the same machine.
#
#   scripts/preauth-flood.sh [OUT.jsonl]
#
# Environment:
#   RATES="0 4096"      rates to compare
#   ROUNDS=2            rounds over RATES
#   DURATION=10         seconds of each login run (the flood lasts DURATION + 4: it starts 2 s
#                       before the logins and ends 2 s after)
#   FLOOD=64            flooding connections
#   MODES="starttls/fast none/fast"   login runs: TLS/MODE pairs for loadgen --tls/--mode
#   RUST_LOG=warn       host log level
#
# Only loopback addresses are used; every run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-preauth-flood.jsonl}
RATES=${RATES:-"0 4096"}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
FLOOD=${FLOOD:-64}
MODES=${MODES:-"starttls/fast none/fast"}
export RUST_LOG=${RUST_LOG:-warn}

cargo build --release --quiet --example host --example loadgen
HOST=${HOST_BIN:-target/release/examples/host}
LOADGEN=target/release/examples/loadgen

work=$(mktemp -d /tmp/sasl2-fast-flood.XXXXXX)
host_pid=
stop_host() {
  if [ -n "$host_pid" ] && kill -0 "$host_pid" 2>/dev/null; then
    kill "$host_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$host_pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$host_pid" 2>/dev/null || true
  fi
  host_pid=
}
cleanup() {
  stop_host
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

start_host() {
  local rate=$1
  rm -rf "$work/data"
  cat >"$work/host.toml" <<EOF
[server]
domain = "localhost"
listen = "127.0.0.1:0"
data_dir = "data"
require_tls = false
max_unauthenticated_bytes_per_s = $rate

[accounts]
alice = "alicepass"

[plugins.fast]
enabled = true
EOF
  "$HOST" --config "$work/host.toml" >"$work/host.out" 2>"$work/host.err" &
  host_pid=$!
  for _ in $(seq 150); do
    grep -q '^listening on' "$work/host.out" 2>/dev/null && break
    kill -0 "$host_pid" 2>/dev/null || { cat "$work/host.err" >&2; exit 1; }
    sleep 0.2
  done
  port=$(sed -n '1s/.*:\([0-9]*\)$/\1/p' "$work/host.out")
  [ -n "$port" ] || { echo "host did not start" >&2; exit 1; }
  ca="$work/data/tls/cert.pem"
}

# logins LABEL TLS MODE: one login run, JSON appended to $out.
logins() {
  local label=$1 tls=$2 mode=$3 json
  json=$("$LOADGEN" --port "$port" --tls "$tls" --ca "$ca" --mode "$mode" -c 1 \
    --duration "$DURATION" --server-pid "$host_pid" --agent-prefix "$label" --json) || {
    echo "$label: loadgen failed" >&2
    return 0
  }
  echo "$json" | sed "s|^{|{\"label\":\"$label\",\"load1\":$(cut -d' ' -f1 /proc/loadavg),|" >>"$out"
  echo "$json" | jq -r --arg l "$label" '"\($l)\tp50 \(.latency_ms.p50) ms\tp90 \(.latency_ms.p90) ms\tp99 \(.latency_ms.p99) ms\t\(.logins_ok) logins\tfailed \(.logins_failed)"' 2>/dev/null ||
    echo "$label $json"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg), $(git rev-parse --short HEAD)" | tee -a "$out"
for round in $(seq "$ROUNDS"); do
  for rate in $RATES; do
    start_host "$rate"
    for m in $MODES; do
      tls=${m%/*}
      mode=${m#*/}
      logins "r$round/rate$rate/$tls-$mode/quiet" "$tls" "$mode"
      "$LOADGEN" --port "$port" --tls none --flood "$FLOOD" --source 127.0.0.2 \
        --duration $((DURATION + 4)) --server-pid "$host_pid" --json >"$work/flood.json" &
      flood_pid=$!
      sleep 2
      logins "r$round/rate$rate/$tls-$mode/flooded" "$tls" "$mode"
      wait "$flood_pid" || true
      sed "s|^{|{\"label\":\"r$round/rate$rate/$tls-$mode/flood\",|" "$work/flood.json" | tee -a "$out"
    done
    # The flood alone: what it makes the host read and spend, with nothing else running.
    sleep 1
    "$LOADGEN" --port "$port" --tls none --flood "$FLOOD" --source 127.0.0.2 \
      --duration "$DURATION" --server-pid "$host_pid" --json |
      sed "s|^{|{\"label\":\"r$round/rate$rate/flood-alone\",|" | tee -a "$out"
    stop_host
  done
done
echo "# end $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out"
