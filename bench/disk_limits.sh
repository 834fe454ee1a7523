#!/usr/bin/env bash
# Physical limits of the disk holding a data directory, measured with dd the way a user would:
#
#   1. raw sequential write bandwidth: 1 MiB direct (O_DIRECT) writes, then fdatasync;
#   2. the same through the page cache + one fdatasync at the end (how the WAL writes:
#      buffered WriteAt + SyncFile);
#   3. synchronous 4 KiB writes per second (O_DSYNC: each write waits for the disk like a
#      write + fdatasync, i.e. an upper bound on WAL group commits per second), once
#      overwriting a preallocated file (what the WAL does: segments are preallocated) and once
#      appending to a new file (every sync also persists the size).
#
# Usage: bench/disk_limits.sh [DIR] [SEQ_MIB] [SYNC_WRITES]
#   DIR          directory on the disk to test (default: target/ of the repository)
#   SEQ_MIB      size of the sequential test in MiB (default 1024)
#   SYNC_WRITES  number of O_DSYNC 4 KiB writes (default 2000)
# Test files are removed at the end. Needs GNU dd and awk.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$repo/target}
seq_mib=${2:-1024}
sync_writes=${3:-2000}
mkdir -p "$dir"
f="$dir/disk_limits.$$.tmp"
trap 'rm -f "$f" "$f.append"' EXIT

# Prints "<bytes> <seconds>" from dd's summary line on stdin.
parse() {
  awk '/bytes/ && /copied/ {
         bytes = $1
         for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) secs = $(i - 1)
         sub(",", ".", secs); print bytes, secs }'
}

run_dd() { LC_ALL=C dd "$@" 2>&1 >/dev/null | parse; }

echo "disk: $(df -h "$dir" | awk 'NR == 2 { print $1 " mounted on " $6 ", " $4 " free" }')"
echo "dir:  $dir"

read -r b s < <(run_dd if=/dev/zero of="$f" bs=1M count="$seq_mib" oflag=direct conv=fdatasync)
awk -v b="$b" -v s="$s" 'BEGIN { printf "sequential write, O_DIRECT 1 MiB + fdatasync: %d MiB in %.2f s = %.1f MiB/s\n", b / 1048576, s, b / 1048576 / s }'

read -r b s < <(run_dd if=/dev/zero of="$f" bs=1M count="$seq_mib" conv=fdatasync,notrunc)
awk -v b="$b" -v s="$s" 'BEGIN { printf "sequential write, buffered 1 MiB + fdatasync:  %d MiB in %.2f s = %.1f MiB/s\n", b / 1048576, s, b / 1048576 / s }'

read -r b s < <(run_dd if=/dev/zero of="$f" bs=4k count="$sync_writes" oflag=dsync conv=notrunc)
awk -v n="$sync_writes" -v s="$s" 'BEGIN { printf "O_DSYNC 4 KiB writes, preallocated file:     %d in %.2f s = %.0f syncs/s (%.2f ms each)\n", n, s, n / s, 1000 * s / n }'

rm -f "$f.append"
read -r b s < <(run_dd if=/dev/zero of="$f.append" bs=4k count="$sync_writes" oflag=dsync)
awk -v n="$sync_writes" -v s="$s" 'BEGIN { printf "O_DSYNC 4 KiB writes, appending:             %d in %.2f s = %.0f syncs/s (%.2f ms each)\n", n, s, n / s, 1000 * s / n }'
