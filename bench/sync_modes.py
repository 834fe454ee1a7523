#!/usr/bin/env python3
"""bench/sync_modes.py: ways to make a 4 KiB append durable, 2000 times each, in a 64 MiB file that
is preallocated with posix_fallocate or zero-filled first: pwrite + fdatasync (how the WAL syncs),
pwrite on an O_DSYNC descriptor, and O_DIRECT|O_DSYNC. Run in the data directory's filesystem:
TMPDIR=/path python3 bench/sync_modes.py"""
import mmap
import os
import time


def run(mode, n=2000):
    p = os.path.join(os.environ.get('TMPDIR', '/tmp'), 'raftkv_sync_modes.dat')
    if os.path.exists(p):
        os.remove(p)
    flags = os.O_RDWR | os.O_CREAT
    fd = os.open(p, flags, 0o644)
    size = 64 << 20
    if mode.startswith('fallocate'):
        os.posix_fallocate(fd, 0, size)
    else:
        z = b'\0' * (1 << 20)
        for i in range(size >> 20):
            os.pwrite(fd, z, i << 20)
    os.fsync(fd)
    os.close(fd)
    if 'odsync' in mode:
        flags |= os.O_DSYNC
    if 'direct' in mode:
        flags |= os.O_DIRECT
    fd = os.open(p, flags)
    buf = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT needs
    buf.write(b'x' * 4096)
    lat = []
    t = time.perf_counter()
    off = 0
    for _ in range(n):
        a = time.perf_counter()
        os.pwritev(fd, [buf], off)
        off += 4096
        if 'odsync' not in mode:
            os.fdatasync(fd)
        lat.append(time.perf_counter() - a)
    el = time.perf_counter() - t
    lat.sort()
    print(f"{mode:24s} {n / el:7.0f} syncs/s  p50 {lat[n // 2] * 1e6:6.0f} us  p99 {lat[int(n * .99)] * 1e6:6.0f} us")
    os.close(fd)
    os.remove(p)


for _ in range(2):
    for m in ['fallocate', 'zeroed', 'zeroed-odsync', 'zeroed-odsync-direct', 'fallocate-odsync-direct']:
        run(m)
