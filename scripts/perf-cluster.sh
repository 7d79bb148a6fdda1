#!/usr/bin/env bash
# FAST logins against one or two example hosts that share one throwaway PostgreSQL: logins/s,
# each host's CPU per login, and PostgreSQL's own CPU per login (utime+stime of the postmaster
# and its children from /proc). The figures of docs/performance.md §PostgreSQL.
#
#   scripts/perf-cluster.sh HOSTS [OUT.jsonl]     HOSTS = 1 or 2
#
# Environment: DURATION=10 (seconds per run), CONCURRENCY=8 (connections per host),
# MECH=HT-SHA-256-EXPR, RUST_LOG=warn. Needs Debian's postgresql package (initdb, pg_ctl).
# Only loopback addresses are used; everything is stopped and removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

hosts=${1:?usage: perf-cluster.sh HOSTS [OUT.jsonl]}
out=${2:-/dev/null}
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-8}
MECH=${MECH:-HT-SHA-256-EXPR}
export RUST_LOG=${RUST_LOG:-warn}

cargo build --release --quiet --example host --example loadgen
HOST=$PWD/target/release/examples/host
LOADGEN=$PWD/target/release/examples/loadgen
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] || {
  echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2
  exit 1
}

work=$(mktemp -d /tmp/sasl2-fast-cluster.XXXXXX)
chmod 755 "$work"
pgdir=$work/pg
mkdir "$pgdir"
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$pgdir"
  as_pg=(runuser -u postgres --)
fi
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

"${as_pg[@]}" "$PGBIN/initdb" -D "$pgdir/data" -U fast -A trust -E UTF8 --no-locale >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$PGBIN/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
  -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1" start >/dev/null
"$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U fast fast
url="postgresql://fast@127.0.0.1:$port/fast"
postmaster=$(head -1 "$pgdir/data/postmaster.pid")

# CPU ticks of the postmaster and its children.
pg_ticks() {
  local t=0 p
  for p in $postmaster $(ps --ppid "$postmaster" -o pid= 2>/dev/null); do
    [ -r "/proc/$p/stat" ] || continue
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}

ports=()
for i in $(seq "$hosts"); do
  cat >"$work/host$i.toml" <<CONF
[server]
domain = "localhost"
listen = "127.0.0.1:0"
data_dir = "data$i"
max_connections = 19000
[accounts]
alice = "alicepass"
[plugins.fast]
enabled = true
store = "postgres"
postgres_url = "$url"
pepper_file = "$work/pepper"
CONF
  "$HOST" --config "$work/host$i.toml" >"$work/host$i.out" 2>"$work/host$i.err" &
  pids+=($!)
  for _ in $(seq 150); do
    grep -q '^listening on' "$work/host$i.out" 2>/dev/null && break
    sleep 0.2
  done
  ports+=("$(sed -n '1s/.*:\([0-9]*\)$/\1/p' "$work/host$i.out")")
  [ -n "${ports[-1]}" ] || { cat "$work/host$i.err" >&2; exit 1; }
done

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $hosts host(s) on PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), c=$CONCURRENCY per host, $MECH, ${DURATION}s"
# Tokens are issued (password logins) before the measured window: loadgen's setup.
before=$(pg_ticks)
start=$(date +%s.%N)
for i in $(seq "$hosts"); do
  "$LOADGEN" --server-pid "${pids[$((i - 1))]}" --duration "$DURATION" --port "${ports[$((i - 1))]}" \
    --tls starttls --ca "$work/data$i/tls/cert.pem" --mode fast --mech "$MECH" \
    -c "$CONCURRENCY" --agent-prefix "h$i" --json >"$work/lg$i.json" &
  lg[$i]=$!
done
for i in $(seq "$hosts"); do wait "${lg[$i]}"; done
after=$(pg_ticks)
python3 - "$hosts" "$work" "$((after - before))" "$(getconf CLK_TCK)" <<'PY' | tee -a "$out"
import json, sys
hosts, work, pg_ticks, tck = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
runs = [json.load(open(f"{work}/lg{i}.json")) for i in range(1, hosts + 1)]
logins = sum(r["logins_ok"] for r in runs)
# PostgreSQL's CPU covers each loadgen's whole run, its setup included (one password login
# and durable token issue per connection): a few per host next to thousands of FAST logins.
print(json.dumps({
    "hosts": hosts,
    "logins_ok": logins,
    "logins_failed": sum(r["logins_failed"] for r in runs),
    "logins_per_s": round(sum(r["logins_per_s"] for r in runs), 1),
    "p50_ms": [r["latency_ms"]["p50"] for r in runs],
    "p99_ms": [r["latency_ms"]["p99"] for r in runs],
    "host_cpu_ms_per_login": [r["server_cpu_ms_per_login"] for r in runs],
    "postgres_cpu_ms": pg_ticks * 1000 / tck,
    "postgres_cpu_ms_per_login": round(pg_ticks * 1000 / tck / max(logins, 1), 3),
}))
PY
