#!/usr/bin/env python3
"""bench/restart_rss.py: restart time and peak RSS of two raftkv binaries, side by side, on copies
of one data directory (BENCHMARKS.md, "Cost curves").

One node (`--snap-count 200 --max-snapshots 2 --catch-up-entries 50`, as bench/snapshot_scale.py)
is filled with MIB MiB of 64 KiB values by 4 clients and stopped; then each binary restarts on a
fresh copy of the directory with the page cache dropped, twice, alternating: the time until the
node leads and has applied everything, and its VmHWM.

    bench/restart_rss.py 1024 OLD_BINARY NEW_BINARY
"""
import http.client, json, os, shutil, subprocess, sys, threading, time
MIB = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
BINS = {"base": sys.argv[2], "new": sys.argv[3]}
ROOT = os.environ.get("RESULTS_DIR", "/tmp/restart_rss")
PORT, PEER = 47180, 47101
VAL = b"v" * (64 << 10)

def req(method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    c.request(method, path, body=body); r = c.getresponse(); d = r.read(); c.close(); return r.status, d

def status():
    try:
        code, b = req("GET", "/v1/status"); return json.loads(b) if code == 200 else None
    except Exception:
        return None

def start(binary, d):
    p = subprocess.Popen([binary, "--id", "1", "--cluster", f"http://127.0.0.1:{PEER}", "--port", str(PORT),
                          "--data-dir", d, "--snap-count", "200", "--max-snapshots", "2", "--catch-up-entries", "50"], stderr=open(d + ".log", "a"))
    return p

def hwm(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmHWM:"): return int(l.split()[1]) / 1024

shutil.rmtree(ROOT, ignore_errors=True); os.makedirs(ROOT)
d0 = ROOT + "/fill"
p = start(BINS["new"], d0)
while status() is None: time.sleep(0.1)
n = MIB * 16
def fill(k):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    for i in range(k, n, 4):
        c.request("PUT", f"/key{i:07d}", body=VAL); r = c.getresponse(); r.read(); assert r.status == 204, r.status
ts = [threading.Thread(target=fill, args=(k,)) for k in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
time.sleep(3)
applied = status()["applied_index"] if "applied_index" in status() else None
p.terminate(); p.wait()
print("filled", MIB, "MiB; dir", subprocess.check_output(["du", "-sm", d0]).split()[0].decode(), "MiB", flush=True)
for rnd in range(2):
    for name in ("base", "new"):
        d = f"{ROOT}/{name}{rnd}"
        subprocess.check_call(["cp", "-a", d0, d])
        subprocess.call(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"])
        t0 = time.time(); p = start(BINS[name], d)
        while True:
            s = status()
            if s and s.get("applied_index", 0) >= (applied or 0) and s.get("leader"): break
            time.sleep(0.02)
        dt = time.time() - t0; peak = hwm(p.pid)
        p.terminate(); p.wait(); shutil.rmtree(d)
        print(f"{name} round {rnd}: restart {dt:.2f} s, peak RSS {peak:.0f} MiB", flush=True)
