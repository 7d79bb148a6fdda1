#!/usr/bin/env bash
# FAST over direct TLS: resumed 1-RTT against 0-RTT (TLS 1.3 early data), same host, same run,
# ABAB. One release host with `tls_early_data = true`; every loadgen client keeps its own TLS
# session store. Prints one summary line per run and appends the JSON to OUT.
#
#   scripts/zero-rtt-ab.sh [OUT.jsonl]
#
# Environment: DURATION=5 (seconds per run), CONCURRENCY=8 (CPU runs), DELAY_MS=10 (one-way
# delay of the round-trip runs, concurrency 1), PIN=1 (host on CPU 0, loadgen on CPU 1).
# Only loopback addresses are used; every run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-zero-rtt-ab.jsonl}
DURATION=${DURATION:-5}
CONCURRENCY=${CONCURRENCY:-8}
DELAY_MS=${DELAY_MS:-10}
PIN=${PIN:-1}
export RUST_LOG=${RUST_LOG:-warn}

cargo build --release --quiet --example host --example loadgen
HOST=target/release/examples/host
LOADGEN=target/release/examples/loadgen
pin_host=()
pin_loadgen=()
if [ "$PIN" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin_host=(taskset -c 0)
  pin_loadgen=(taskset -c 1)
fi

work=$(mktemp -d /tmp/sasl2-fast-zrtt.XXXXXX)
host_pid=
cleanup() {
  if [ -n "$host_pid" ] && kill -0 "$host_pid" 2>/dev/null; then
    kill "$host_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$host_pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$host_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

cat >"$work/host.toml" <<'TOML'
[server]
domain = "localhost"
listen = "127.0.0.1:0"
listen_tls = "127.0.0.1:0"
data_dir = "data"
tls_early_data = true
max_connections = 19000

[accounts]
alice = "alicepass"

[plugins.fast]
enabled = true
TOML

"${pin_host[@]}" "$HOST" --config "$work/host.toml" >"$work/host.out" 2>"$work/host.err" &
host_pid=$!
for _ in $(seq 150); do
  [ "$(grep -c '^listening on' "$work/host.out" 2>/dev/null || true)" -ge 2 ] && break
  kill -0 "$host_pid" 2>/dev/null || { cat "$work/host.err" >&2; exit 1; }
  sleep 0.2
done
tls_port=$(sed -n '2s/.*:\([0-9]*\)$/\1/p' "$work/host.out")
ca="$work/data/tls/cert.pem"

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg), PIN=$PIN DURATION=$DURATION" | tee -a "$out"
run() {
  local label=$1
  shift
  local json
  json=$("${pin_loadgen[@]}" "$LOADGEN" --server-pid "$host_pid" --duration "$DURATION" --json \
    --port "$tls_port" --tls direct --ca "$ca" --mode fast --mech HT-SHA-256-NONE "$@")
  echo "$json" | sed "s|^{|{\"label\":\"$label\",|" >>"$out"
  echo "$json" | jq -r --arg l "$label" \
    '"\($l)\tc=\(.concurrency)\t\(.logins_per_s) logins/s\tp50 \(.latency_ms.p50) ms\tround trips \(.round_trips)\tserver \(.server_cpu_ms_per_login) ms/login\tresumed \(.tls_resumed)/\(.logins_ok)\tearly \(.early_data_accepted)\tfailed \(.logins_failed)"'
}
# CPU per login, ABAB (each run its own user-agent ids, so its own tokens and counts).
run A1/resumed-1rtt -c "$CONCURRENCY" --resume --agent-prefix a1
run B1/0-rtt -c "$CONCURRENCY" --zero-rtt --agent-prefix b1
run A2/resumed-1rtt -c "$CONCURRENCY" --resume --agent-prefix a2
run B2/0-rtt -c "$CONCURRENCY" --zero-rtt --agent-prefix b2
# Control: resumed 1-RTT with count, which makes every login write its count durably, as
# every 0-RTT login must (Z-4).
run C1/resumed-1rtt+count -c "$CONCURRENCY" --resume --count --agent-prefix c1
run C2/resumed-1rtt+count -c "$CONCURRENCY" --resume --count --agent-prefix c2
# Round trips: one client, every chunk delayed DELAY_MS each way by the loadgen's relay.
run A3/resumed-1rtt/delay -c 1 --resume --delay-ms "$DELAY_MS" --agent-prefix a3
run B3/0-rtt/delay -c 1 --zero-rtt --delay-ms "$DELAY_MS" --agent-prefix b3
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out"
