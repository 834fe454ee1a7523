#!/usr/bin/env python3
"""bench/sync_pipeline.py: does a second WAL job in flight make syncs cheaper per append? Appends
of 4 KiB into a zero-filled 64 MiB file, each made durable before it counts, by 1 or 2 threads:
a thread takes the next offset in order, writes there, then syncs (fdatasync, or O_DSYNC on the
write), so with 2 threads one append is written while the other's sync runs, the way two WAL jobs
in flight would overlap. Prints appends/s and the latency of one (write + sync). Run in the data
directory's filesystem: TMPDIR=/path python3 bench/sync_pipeline.py"""
import os
import threading
import time

SIZE = 64 << 20
BLOCK = 4096


def zeroed_file():
    p = os.path.join(os.environ.get('TMPDIR', '/tmp'), 'raftkv_sync_pipeline.dat')
    if os.path.exists(p):
        os.remove(p)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    z = b'\0' * (1 << 20)
    for i in range(SIZE >> 20):
        os.pwrite(fd, z, i << 20)
    os.fsync(fd)
    os.close(fd)
    return p


def run(mode, threads, n=4000):
    p = zeroed_file()
    flags = os.O_RDWR | (os.O_DSYNC if mode == 'odsync' else 0)
    fd = os.open(p, flags)
    buf = b'x' * BLOCK
    lock = threading.Lock()
    next_off = [0]
    lat = []

    def worker():
        while True:
            with lock:
                off = next_off[0]
                if off >= n * BLOCK:
                    return
                next_off[0] += BLOCK
                a = time.perf_counter()
                if mode == 'fdatasync':
                    os.pwrite(fd, buf, off)  # in order, into the page cache
            if mode == 'fdatasync':
                os.fdatasync(fd)
            else:
                os.pwrite(fd, buf, off)  # the write is the sync: not under the lock
            lat.append(time.perf_counter() - a)

    t = time.perf_counter()
    ws = [threading.Thread(target=worker) for _ in range(threads)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    el = time.perf_counter() - t
    lat.sort()
    print(f"{mode:10s} {threads} in flight {n / el:7.0f} appends/s  "
          f"p50 {lat[n // 2] * 1e6:6.0f} us  p99 {lat[int(n * .99)] * 1e6:6.0f} us", flush=True)
    os.close(fd)
    os.remove(p)


for _ in range(2):
    for mode in ['fdatasync', 'odsync']:
        for threads in [1, 2]:
            run(mode, threads)
