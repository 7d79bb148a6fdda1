#!/usr/bin/env python3
"""Monitoring and administration under abuse (issue 23 item 7, docs/security.md): can the
operator still see and steer a host that strangers (metrics) or the host's own uid (admin
socket) crowd with idle connections?

Starts the release host with `metrics_listen` on loopback, then
  1. opens CROWD connections to the metrics port, every other one trickling a byte of a
     request head every 0.5 s, the rest idle; scrapes `GET /metrics` every 0.5 s for SECONDS
     on fresh connections (each given 1 s) and counts the answered ones;
  2. opens ADMIN idle connections to `<data_dir>/admin.sock` and times `host ctl stats`
     (`--timeout 1`) three times.
Everything is on loopback and bounded by SECONDS.

    cargo build --release --example host
    python3 scripts/monitoring-abuse.py [CROWD] [ADMIN] [SECONDS]     # defaults 24 300 17
"""
import os, socket, subprocess, sys, tempfile, threading, time

CROWD = int(sys.argv[1]) if len(sys.argv) > 1 else 24
ADMIN = int(sys.argv[2]) if len(sys.argv) > 2 else 300
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 17.0
HOST = os.environ.get("HOST_BIN", "target/release/examples/host")

work = tempfile.mkdtemp(prefix="monitoring-abuse.")
cfg = os.path.join(work, "host.toml")
with open(cfg, "w") as f:
    f.write("""[server]
domain = "localhost"
listen = "127.0.0.1:0"
data_dir = "data"
metrics_listen = "127.0.0.1:0"
[accounts]
alice = "alicepass"
[plugins.fast]
enabled = true
""")
host = subprocess.Popen([HOST, "--config", cfg], stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, text=True,
                        env=dict(os.environ, RUST_LOG="warn"))
metrics = None
try:
    deadline = time.time() + 30
    while metrics is None and time.time() < deadline:
        line = host.stdout.readline()
        if not line:
            sys.exit("host exited")
        if line.startswith("metrics listening on "):
            h, p = line.split()[-1].rsplit(":", 1)
            metrics = (h, int(p))
    if metrics is None:
        sys.exit("no metrics listener")

    # 1. The metrics listener.
    stop = threading.Event()
    crowd = []
    for i in range(CROWD):
        s = socket.create_connection(metrics)
        crowd.append(s)
        if i % 2 == 0:
            def trickle(s=s):
                head = b"GET /metrics HTTP/1.1\r\nx-slow: " + b"a" * 1000
                for b in head:
                    if stop.wait(0.5):
                        return
                    try:
                        s.send(bytes([b]))
                    except OSError:
                        return
            threading.Thread(target=trickle, daemon=True).start()
    answered = tried = 0
    t_end = time.time() + SECONDS
    while time.time() < t_end:
        tried += 1
        try:
            c = socket.create_connection(metrics, timeout=1)
            c.settimeout(1)
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            t0 = time.time()
            while b"# EOF" not in got and time.time() - t0 < 1:
                chunk = c.recv(65536)
                if not chunk:
                    break
                got += chunk
            if got.startswith(b"HTTP/1.1 200") and b"# EOF" in got:
                answered += 1
            c.close()
        except OSError:
            pass
        time.sleep(0.5)
    stop.set()
    for s in crowd:
        s.close()
    print(f"metrics: {CROWD} idle or trickling connections open: {answered} of {tried} "
          f"scrapes answered within 1 s in {SECONDS:.0f} s")

    # 2. The admin socket.
    sock = os.path.join(work, "data", "admin.sock")
    idle = []
    for _ in range(ADMIN):
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        u.connect(sock)
        idle.append(u)
    for i in range(3):
        t0 = time.time()
        r = subprocess.run([HOST, "ctl", "--config", cfg, "--timeout", "1", "stats", "--json"],
                           capture_output=True, text=True, timeout=SECONDS)
        took = time.time() - t0
        ok = r.returncode == 0 and '"running": true' in r.stdout
        print(f"admin: {ADMIN} idle connections open: host ctl stats "
              f"{'answered' if ok else 'FAILED (' + r.stderr.strip() + ')'} in {took:.3f} s")
    for u in idle:
        u.close()
finally:
    host.terminate()
    try:
        host.wait(10)
    except subprocess.TimeoutExpired:
        host.kill()
