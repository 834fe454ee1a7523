#!/usr/bin/env python3
"""bench/fsync_prealloc.py: write 3000 bytes + fdatasync, 2000 times, into a 64 MiB file that is
appended to, preallocated with posix_fallocate (how WAL segments are made today), or zero-filled
first. Run in the data directory's filesystem: TMPDIR=/path python3 bench/fsync_prealloc.py"""
import os, time
def run(mode, n=2000):
    p=os.path.join(os.environ.get('TMPDIR', '/tmp'), 'raftkv_fsync_test.dat')
    if os.path.exists(p): os.remove(p)
    fd=os.open(p, os.O_RDWR|os.O_CREAT, 0o644)
    size=64<<20
    if mode=='fallocate': os.posix_fallocate(fd,0,size)
    elif mode=='zeroed':
        z=b'\0'*(1<<20)
        for i in range(64): os.pwrite(fd,z,i<<20)
        os.fsync(fd)
    os.fsync(fd)
    buf=b'x'*3000
    t=time.perf_counter(); off=0
    lat=[]
    for i in range(n):
        a=time.perf_counter()
        os.pwrite(fd,buf,off); off+=len(buf)
        os.fdatasync(fd)
        lat.append(time.perf_counter()-a)
    el=time.perf_counter()-t
    lat.sort()
    print(f"{mode:10s} {n/el:7.0f} syncs/s  p50 {lat[n//2]*1e6:6.0f}us p99 {lat[int(n*.99)]*1e6:6.0f}us")
    os.close(fd); os.remove(p)
for m in ['append','fallocate','zeroed','append','fallocate','zeroed']: run(m)
