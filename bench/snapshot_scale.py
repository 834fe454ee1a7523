#!/usr/bin/env python3
"""bench/snapshot_scale.py: how snapshot costs grow with the state (BENCHMARKS.md, "Cost curves").

For each state size: start 3 nodes on 127.0.0.1, fill the state with 64 KiB values, then measure
  - snapshot creation: time of the first snapshot job that holds the whole state, and its file size;
  - adding a member: time from its start until it has applied everything, and the peak RSS
    (VmHWM) of every node, against the state's key+value bytes and an empty node's RSS;
  - restart: time until a restarted follower has applied everything again;
  - WAL disk use of the leader after the fill (bounded by purge);
  - PUT p99 (100-byte values, 16 clients on the leader) for 5 s with nothing else going on, and
    for the 5 s right after the new member starts (its snapshot streaming);
  - RSS of every node before and after 20 s of sustained overwrites (no growth once the state
    stops growing);
  - the peak RSS of every node during 20 s of overwrites of random filled keys with values of
    the same size (the state's size stays put while snapshots are taken beside the writes).
With --restart-entries N: one node, N small entries with no snapshot, then the time and peak RSS
of a restart that replays them all.

    bench/snapshot_scale.py                    # 10 and 100 MiB
    bench/snapshot_scale.py --sizes-mib 10,100,1024
    bench/snapshot_scale.py --restart-entries 1000000
    bench/snapshot_scale.py --sizes-mib 200 --flags ''   # the nodes' default flags
"""
import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

VALUE_BYTES = 64 << 10
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def request(port, method, path, body=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def status(port):
    try:
        code, body = request(port, "GET", "/v1/status", timeout=5)
        return json.loads(body) if code == 200 else None
    except (OSError, http.client.HTTPException):
        return None


def metric(port, name):
    """A metric's value as an integer (a count, bytes), None if absent."""
    v = metric_f(port, name)
    return None if v is None else int(v)


def metric_f(port, name):
    """A metric's value as a float (seconds, say), None if absent."""
    try:
        _, body = request(port, "GET", "/metrics", timeout=5)
    except (OSError, http.client.HTTPException):
        return None
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def poll(what, secs, f):
    deadline = time.time() + secs
    while time.time() < deadline:
        v = f()
        if v:
            return v
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


class Cluster:
    def __init__(self, binary, work, base_port, flags):
        self.binary, self.work, self.flags = binary, work, flags
        self.peer = {i: base_port + i for i in range(1, 5)}
        self.api = {i: base_port + 10 + i for i in range(1, 5)}
        self.procs = {}

    def urls(self, n):
        return ",".join(f"http://127.0.0.1:{self.peer[i]}" for i in range(1, n + 1))

    def start(self, i, n, join=False):
        args = [self.binary, "--id", str(i), "--cluster", self.urls(n), "--port", str(self.api[i]),
                "--data-dir", os.path.join(self.work, f"n{i}")] + self.flags
        if join:
            args.append("--join")
        log = open(os.path.join(self.work, f"n{i}.log"), "ab")
        self.procs[i] = subprocess.Popen(args, stdout=log, stderr=log)

    def stop(self, i):
        p = self.procs.pop(i)
        p.terminate()
        p.wait(timeout=60)

    def stop_all(self):
        for i in list(self.procs):
            self.procs[i].kill()
            self.procs[i].wait()
        self.procs.clear()


def fill(port, count, threads=4):
    def worker(t):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for k in range(t, count, threads):
            value = (b"%08d" % k) * (VALUE_BYTES // 8)
            for _ in range(10):
                try:
                    # The load generator's key format (`--key-size 10`), so `bench` can overwrite them.
                    c.request("PUT", f"/v1/kv/{k:010d}", body=value)
                    r = c.getresponse()
                    r.read()
                    if r.status in (200, 201, 204):
                        break
                except OSError:
                    c.close()
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                time.sleep(0.1)
            else:
                raise SystemExit(f"put k{k} failed")
        c.close()

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def bench(binary, port, secs, clients=16, keys=1000, key_size=12, value_size=100, refusals_ok=False):
    """A put load; 12-character keys stay clear of the filled ones (10 characters). With
    `refusals_ok`, answers that refuse a write (503: too many requests while a snapshot job
    is behind) are counted, not failed. Returns (p99 ms, puts/s, errors)."""
    out = subprocess.run(
        [binary, "bench", "--endpoints", f"http://127.0.0.1:{port}", "--clients", str(clients),
         "--duration", f"{secs}s", "--keys", str(keys), "--key-size", str(key_size),
         "--value-size", str(value_size), "--json", "--progress-ms", "0"]
        + (["--max-error-ratio", "1"] if refusals_ok else []),
        check=True, capture_output=True, text=True).stdout
    d = json.loads(out)
    return d["latency_us"]["put"]["p99"] / 1000.0, d["ops_per_sec"], d["errors_total"]


class Sampler:
    """Every 50 ms, each node's RSS and the bytes of its in-memory log: the log's share of the
    largest RSS seen, which is where a peak above the state comes from."""

    def __init__(self, c):
        self.c, self.stop, self.best = c, threading.Event(), (0.0, 0.0)
        self.t = threading.Thread(target=self.loop)
        self.t.start()

    def loop(self):
        while not self.stop.is_set():
            for i, p in list(self.c.procs.items()):
                try:
                    rss = rss_kib(p.pid, "VmRSS") / 1024
                except (OSError, RuntimeError):
                    continue
                if rss > self.best[0]:
                    log = metric(self.c.api[i], "raftkv_log_bytes_in_memory") or 0
                    self.best = (rss, log / (1 << 20))
            time.sleep(0.05)

    def finish(self):
        self.stop.set()
        self.t.join()
        return self.best


def dir_bytes(path, suffix):
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(suffix))


def run(binary, size_mib, base_port, flags):
    work = tempfile.mkdtemp(prefix="raftkv-scale.")
    count = size_mib * (1 << 20) // VALUE_BYTES
    c = Cluster(binary, work, base_port, flags)
    row = {"state_mib": size_mib, "values": count}
    try:
        for i in (1, 2, 3):
            c.start(i, 3)
        poll("a leader", 30, lambda: (status(c.api[1]) or {}).get("leader"))
        row["empty_rss_mib"] = rss_kib(c.procs[1].pid, "VmRSS") / 1024
        t = time.time()
        fill(c.api[1], count)
        row["fill_s"] = time.time() - t
        leader = status(c.api[1])["leader"]
        filled = status(c.api[leader])["applied_index"]
        # Time the first snapshot job that covers the whole state: the one the next snap-count
        # entries trigger. Jobs complete one at a time, so each change of the saved count is one
        # job.
        last = (metric(c.api[leader], "raftkv_snapshots_saved_total"),
                metric_f(c.api[leader], "raftkv_snapshot_save_duration_seconds_sum") or 0.0)
        snap_count = int(flags[flags.index("--snap-count") + 1]) if "--snap-count" in flags else 10000
        for k in range(snap_count + 10):
            request(c.api[leader], "PUT", f"/v1/kv/tick{k}", body=b"x")
        deadline = time.time() + 600
        while True:
            if time.time() > deadline:
                raise SystemExit("no full-state snapshot")
            now = (metric(c.api[leader], "raftkv_snapshots_saved_total"),
                   metric_f(c.api[leader], "raftkv_snapshot_save_duration_seconds_sum") or 0.0)
            if now[0] != last[0]:
                job_s = now[1] - last[1]
                last = now
                if status(c.api[leader])["snapshot_index"] >= filled:
                    break
            time.sleep(0.01)
        row["snapshot_create_s"] = job_s
        ldir = os.path.join(work, f"n{leader}")
        snaps = sorted((f for f in os.listdir(ldir) if f.endswith(".snap")))
        row["snapshot_file_mib"] = os.path.getsize(os.path.join(ldir, snaps[-1])) / (1 << 20)
        row["leader_wal_mib"] = dir_bytes(ldir, ".wal") / (1 << 20)
        target = status(c.api[leader])["applied_index"]
        # Add a member and time its catch-up.
        code, body = request(c.api[leader], "POST", "/4", body=f"http://127.0.0.1:{c.peer[4]}".encode())
        if code != 201:
            raise SystemExit(f"add member: {code} {body!r}")
        row["put_p99_ms_quiet"], _, _ = bench(binary, c.api[leader], 5)
        target = status(c.api[leader])["applied_index"]
        t = time.time()
        c.start(4, 4, join=True)
        # Load the leader while the new member's snapshot streams from it.
        loaded = {}
        th = threading.Thread(target=lambda: loaded.update(p99=bench(binary, c.api[leader], 5)[0]))
        th.start()
        poll("node 4 caught up", 1200, lambda: (status(c.api[4]) or {}).get("applied_index", 0) >= target)
        row["add_member_s"] = time.time() - t
        th.join()
        row["put_p99_ms_streaming"] = loaded["p99"]
        for i in (1, 2, 3, 4):
            role = "leader" if i == leader else ("joiner" if i == 4 else "follower")
            row[f"peak_rss_mib_{i}_{role}"] = rss_kib(c.procs[i].pid, "VmHWM") / 1024
        # Sustained overwrites of the same keys: memory must not grow once the state stops growing.
        before = {i: rss_kib(c.procs[i].pid, "VmRSS") / 1024 for i in (1, 2, 3, 4)}
        bench(binary, c.api[leader], 20, clients=32, keys=1000)
        after = {i: rss_kib(c.procs[i].pid, "VmRSS") / 1024 for i in (1, 2, 3, 4)}
        row["rss_growth_mib_after_20s_overwrites"] = round(max(after[i] - before[i] for i in before), 1)
        # Overwrites of random filled keys with values of the same size: the state stays put,
        # snapshots are taken beside the writes. Writing 5 to clear_refs resets VmHWM, so what
        # is read afterwards is this phase's peak alone.
        for i in (1, 2, 3, 4):
            with open(f"/proc/{c.procs[i].pid}/clear_refs", "w") as fh:
                fh.write("5")
        sampler = Sampler(c)
        _, rate, refused = bench(binary, c.api[leader], 20, clients=4, keys=count, key_size=10,
                                 value_size=VALUE_BYTES, refusals_ok=True)
        row["big_overwrites_mib_per_s"] = rate * VALUE_BYTES / (1 << 20)
        row["big_overwrites_refused"] = refused
        _, row["log_mib_at_sampled_peak_big_overwrites"] = sampler.finish()
        row["peak_rss_mib_big_overwrites"] = max(rss_kib(c.procs[i].pid, "VmHWM") / 1024 for i in (1, 2, 3, 4))
        row["state_mib_after_big_overwrites"] = status(c.api[leader])["state_bytes"] / (1 << 20)
        # Restart a follower and time until it has applied everything again.
        f = next(i for i in (1, 2, 3) if i != leader)
        applied = status(c.api[leader])["applied_index"]
        c.stop(f)
        t = time.time()
        c.start(f, 3)
        poll("restarted follower", 600, lambda: (status(c.api[f]) or {}).get("applied_index", 0) >= applied)
        row["restart_s"] = time.time() - t
        row["restart_peak_rss_mib"] = rss_kib(c.procs[f].pid, "VmHWM") / 1024
    finally:
        c.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    worst = max(v for k, v in row.items() if k.startswith("peak_rss_mib_") and "big" not in k)
    row["worst_peak_over_state"] = (worst - row["empty_rss_mib"]) / size_mib
    row["big_overwrites_peak_over_state"] = (row["peak_rss_mib_big_overwrites"] - row["empty_rss_mib"]) / size_mib
    return row


def restart_replay(binary, entries, base_port):
    """One node, `entries` 100-byte puts and no snapshot, then a restart that replays them."""
    work = tempfile.mkdtemp(prefix="raftkv-replay.")
    c = Cluster(binary, work, base_port, ["--snap-count", str(entries * 2)])
    try:
        c.start(1, 1)
        poll("a leader", 30, lambda: (status(c.api[1]) or {}).get("leader"))
        t = time.time()
        subprocess.run([binary, "bench", "--endpoints", f"http://127.0.0.1:{c.api[1]}", "--clients",
                        "64", "--total", str(entries), "--keys", "100000", "--value-size", "100",
                        "--progress-ms", "0"], check=True, capture_output=True)
        fill_s = time.time() - t
        applied = status(c.api[1])["applied_index"]
        wal = dir_bytes(os.path.join(work, "n1"), ".wal") / (1 << 20)
        c.stop(1)
        t = time.time()
        c.start(1, 1)
        poll("replayed", 600, lambda: (status(c.api[1]) or {}).get("applied_index", 0) >= applied)
        row = {"entries": applied, "fill_s": round(fill_s, 1), "wal_mib": round(wal, 1),
               "restart_s": round(time.time() - t, 2),
               "restart_peak_rss_mib": round(rss_kib(c.procs[1].pid, "VmHWM") / 1024, 1)}
    finally:
        c.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-mib", default="10,100")
    # Below the ephemeral range: a connect to a port nobody listens on yet can otherwise connect
    # the socket to itself.
    ap.add_argument("--port-base", type=int, default=24000)
    ap.add_argument("--bin", default=os.environ.get("RAFTKV_BIN"))
    ap.add_argument("--restart-entries", type=int, default=0)
    ap.add_argument("--flags", default="--snap-count 200 --catch-up-entries 50 --max-snapshots 2",
                    help="every node's flags ('' for raftkv's defaults)")
    a = ap.parse_args()
    binary = a.bin
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "raftkv-io-real"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "raftkv")
    if a.restart_entries:
        print(json.dumps(restart_replay(binary, a.restart_entries, a.port_base)), flush=True)
        return 0
    for size in (int(s) for s in a.sizes_mib.split(",")):
        row = run(binary, size, a.port_base, a.flags.split())
        print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
