#!/usr/bin/env python3
"""Host RSS with N unauthenticated connections that each hold an unfinished element, and after
they close (docs/security.md, issue 11 item 2).

Starts the release host (plaintext streams allowed, so no TLS state is measured), opens N
connections spread over enough loopback source addresses (127.0.<i>.<j>) to stay under
`max_unauthenticated_per_ip`, sends a stream header and the first BYTES of an element that
never ends, reads the host's VmRSS, closes them all, waits, and reads it again.

    cargo build --release --example host
    python3 scripts/preauth-rss.py [N] [BYTES]          # defaults 10000 and 15000
"""
import os, re, socket, subprocess, sys, tempfile, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
BYTES = int(sys.argv[2]) if len(sys.argv) > 2 else 15000
PER_IP = 64

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

work = tempfile.mkdtemp(prefix="preauth-rss.")
cfg = os.path.join(work, "host.toml")
with open(cfg, "w") as f:
    f.write(f"""[server]
domain = "localhost"
listen = "127.0.0.1:0"
data_dir = "data"
require_tls = false
max_connections = {N + 100}
auth_timeout = 600
idle_timeout = 600
max_unauthenticated_per_ip = {PER_IP}
[accounts]
alice = "alicepass"
[plugins.fast]
enabled = true
""")
host = subprocess.Popen(["target/release/examples/host", "--config", cfg],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                        env=dict(os.environ, RUST_LOG="warn"))
line = host.stdout.readline().decode()
port = int(line.strip().rsplit(":", 1)[1])
time.sleep(0.5)
idle = rss_kib(host.pid)
header = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
body = b"<message to='alice@localhost'><body>" + b"x" * max(0, BYTES - 40)
def wave():
    socks = []
    for i in range(N):
        s = socket.socket()
        s.bind((f"127.0.{1 + i // PER_IP // 250}.{1 + (i // PER_IP) % 250}", 0))
        s.connect(("127.0.0.1", port))
        s.sendall(header + body)
        socks.append(s)
    time.sleep(3)
    held = rss_kib(host.pid)
    for s in socks:
        s.close()
    time.sleep(5)
    return held, rss_kib(host.pid)

# Two waves: the second shows whether memory kept after the first is reused or added to.
for n, (held, after) in enumerate([wave(), wave()], 1):
    print(f"wave {n}: {N} connections holding {BYTES} bytes of an unfinished element each: "
          f"RSS idle {idle} KiB, held {held} KiB ({(held - idle) / N:.1f} KiB per connection), "
          f"after close {after} KiB")
host.terminate()
host.wait()
