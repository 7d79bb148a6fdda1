#!/usr/bin/env bash
# Runs the example host (release) on loopback with a throw-away config and drives it with the
# load generator, recording logins/s, latency and the host's CPU time per login
# (utime+stime from /proc/<pid>/stat, read by `loadgen --server-pid`).
#
#   scripts/perf-run.sh logins [OUT.jsonl]   the FAST / SCRAM / PLAIN matrix (docs/performance.md)
#   scripts/perf-run.sh hold N [OUT.jsonl]   N idle authenticated connections: host RSS per connection
#   scripts/perf-run.sh one [loadgen args]   one loadgen run against a fresh host
#
# Environment:
#   DURATION=10          seconds per loadgen run (1..600)
#   CONCURRENCY="1 8 64" concurrency levels of the matrix
#   PIN=1                pin the host to CPU 0 and the loadgen to CPU 1 (taskset), so each
#                        side has its own core; PIN=0 lets the kernel schedule both
#   HOLD_TLS="none starttls direct"  transports of `hold`
#   HOLD_SECONDS=30      how long `hold` keeps the connections (bounded, then the loadgen exits)
#   RUST_LOG=warn        host log level (info logs one line per login)
#   HOST_BIN=PATH        run this host binary instead of this tree's (e.g. an older commit's
#                        build), driven by this tree's loadgen: compares servers with one client
#
# Only loopback addresses are used. Every loadgen run is bounded by DURATION and --max-logins.
set -euo pipefail
cd "$(dirname "$0")/.."

cmd=${1:-logins}
shift || true
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-"1 8 64"}
PIN=${PIN:-1}
HOLD_TLS=${HOLD_TLS:-"none starttls direct"}
HOLD_SECONDS=${HOLD_SECONDS:-30}
export RUST_LOG=${RUST_LOG:-warn}

cargo build --release --quiet --example host --example loadgen
HOST=${HOST_BIN:-target/release/examples/host}
LOADGEN=target/release/examples/loadgen

# Both processes need one descriptor per connection (plus a few).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The command prefix that pins to one CPU (empty without PIN=1 or taskset). taskset execs the
# program, so `$!` of a pinned background job is the program's own pid.
pin_host=()
pin_loadgen=()
if [ "$PIN" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin_host=(taskset -c 0)
  pin_loadgen=(taskset -c 1)
fi

work=$(mktemp -d /tmp/sasl2-fast-perf.XXXXXX)
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

cat >"$work/host.toml" <<'EOF'
[server]
domain = "localhost"
listen = "127.0.0.1:0"
listen_tls = "127.0.0.1:0"
data_dir = "data"
require_tls = false
max_connections = 19000
idle_timeout = 3600
auth_timeout = 60

[accounts]
alice = "alicepass"

[plugins.fast]
enabled = true
token_ttl = 1814400
token_min_ttl = 86400
EOF

start_host() {
  "${pin_host[@]}" "$HOST" --config "$work/host.toml" >"$work/host.out" 2>"$work/host.err" &
  host_pid=$!
  for _ in $(seq 150); do
    [ "$(grep -c '^listening on' "$work/host.out" 2>/dev/null || true)" -ge 2 ] && break
    kill -0 "$host_pid" 2>/dev/null || { cat "$work/host.err" >&2; exit 1; }
    sleep 0.2
  done
  plain_port=$(sed -n '1s/.*:\([0-9]*\)$/\1/p' "$work/host.out")
  tls_port=$(sed -n '2s/.*:\([0-9]*\)$/\1/p' "$work/host.out")
  [ -n "$plain_port" ] && [ -n "$tls_port" ] || { echo "host did not start" >&2; exit 1; }
  ca="$work/data/tls/cert.pem"
}

machine() {
  echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
  echo "# load: $(cut -d' ' -f1-3 /proc/loadavg); PIN=$PIN DURATION=$DURATION RUST_LOG=$RUST_LOG"
}

# run LABEL loadgen-args... : one bounded run, JSON appended to $out, a summary line printed.
run() {
  local label=$1
  shift
  local json
  json=$("${pin_loadgen[@]}" "$LOADGEN" --server-pid "$host_pid" --duration "$DURATION" --json "$@") || {
    echo "$label: loadgen failed (exit $?), going on with the next case" >&2
    return 0
  }
  echo "$json" | sed "s|^{|{\"label\":\"$label\",\"load1\":$(cut -d' ' -f1 /proc/loadavg),|" >>"$out"
  if command -v jq >/dev/null; then
    echo "$json" | jq -r --arg l "$label" \
      '"\($l)\tc=\(.concurrency)\t\(.logins_per_s) logins/s\tp50 \(.latency_ms.p50) p99 \(.latency_ms.p99) ms\tserver \(.server_cpu_ms_per_login) ms/login\tloadgen \(.loadgen_cpu_ms_per_login) ms/login\tfailed \(.logins_failed)"'
  else
    echo "$label $json"
  fi
}

case "$cmd" in
logins)
  out=${1:-perf-logins.jsonl}
  start_host
  machine | tee -a "$out"
  for c in $CONCURRENCY; do
    run plain/fast-none --port "$plain_port" --tls none --mode fast --mech HT-SHA-256-NONE -c "$c" --agent-prefix "p$c"
    run plain/scram-sha-256 --port "$plain_port" --tls none --mode scram-sha-256 -c "$c"
    run starttls/fast-none --port "$plain_port" --tls starttls --ca "$ca" --mode fast --mech HT-SHA-256-NONE -c "$c" --agent-prefix "s$c"
    run starttls/fast-expr --port "$plain_port" --tls starttls --ca "$ca" --mode fast --mech HT-SHA-256-EXPR -c "$c" --agent-prefix "e$c"
    run starttls/scram-sha-256 --port "$plain_port" --tls starttls --ca "$ca" --mode scram-sha-256 -c "$c"
    run direct/fast-expr --port "$tls_port" --tls direct --ca "$ca" --mode fast --mech HT-SHA-256-EXPR -c "$c" --agent-prefix "d$c"
    run direct/scram-sha-256 --port "$tls_port" --tls direct --ca "$ca" --mode scram-sha-256 -c "$c"
  done
  run plain/plain --port "$plain_port" --tls none --mode plain -c 8
  run starttls/plain --port "$plain_port" --tls starttls --ca "$ca" --mode plain -c 8
  machine | tail -1 | tee -a "$out"
  ;;
hold)
  n=${1:?usage: perf-run.sh hold N [OUT.jsonl]}
  out=${2:-perf-hold.jsonl}
  machine | tee -a "$out"
  for t in $HOLD_TLS; do
    # A fresh host per transport, so each RSS figure starts from the same baseline.
    if [ -n "$host_pid" ]; then
      kill "$host_pid"
      wait "$host_pid" 2>/dev/null || true
      rm -rf "$work/data"
    fi
    start_host
    port=$plain_port
    [ "$t" = direct ] && port=$tls_port
    args=(--port "$port" --tls "$t")
    [ "$t" = none ] || args+=(--ca "$ca")
    sleep 1
    json=$("${pin_loadgen[@]}" "$LOADGEN" --server-pid "$host_pid" --duration "$HOLD_SECONDS" --json \
      --mode fast --hold "$n" -c 64 --agent-prefix "h" "${args[@]}")
    echo "$json" | sed "s|^{|{\"label\":\"hold/$t\",|" | tee -a "$out"
  done
  ;;
one)
  out=/dev/null
  start_host
  machine
  echo "# host pid $host_pid, STARTTLS/plain port $plain_port, direct TLS port $tls_port"
  port=$plain_port
  for a in "$@"; do [ "$a" = direct ] && port=$tls_port; done
  "${pin_loadgen[@]}" "$LOADGEN" --server-pid "$host_pid" --duration "$DURATION" --port "$port" --ca "$ca" "$@"
  ;;
*)
  sed -n '2,20p' "$0"
  exit 2
  ;;
esac
