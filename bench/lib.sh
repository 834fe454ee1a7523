# bench/lib.sh: helpers for the benchmark scripts (sourced, not run).
#
# Every process started through `start_bg` is recorded and stopped by `cleanup` (TERM, then KILL
# after a grace period), which the caller installs with `trap cleanup EXIT`. Nothing is killed by
# name: only the PIDs this script started.

BENCH_PIDS=()
BENCH_WORK=""

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# make_work_dir: a fresh temp directory for this run, removed by cleanup (KEEP_WORK=1 keeps it).
make_work_dir() {
	BENCH_WORK=$(mktemp -d "${TMPDIR:-/tmp}/raftkv-bench.XXXXXX")
	mkdir -p "$BENCH_WORK/logs"
}

# start_bg NAME DIR CMD...: run CMD in DIR in the background, output to logs/NAME.log.
start_bg() {
	local name=$1 dir=$2
	shift 2
	(cd "$dir" && exec "$@") >"$BENCH_WORK/logs/$name.log" 2>&1 &
	BENCH_PIDS+=($!)
	eval "PID_$name=$!"
}

# stop_pids PID...: TERM, wait up to 10 s, then KILL what is left. Only the given PIDs.
stop_pids() {
	local pid alive i
	for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
	for i in $(seq 1 100); do
		alive=0
		for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		[ "$alive" = 0 ] && break
		sleep 0.1
	done
	for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
	for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

cleanup() {
	local rc=$?
	if [ "${#BENCH_PIDS[@]}" -gt 0 ]; then
		stop_pids "${BENCH_PIDS[@]}"
		BENCH_PIDS=()
	fi
	if [ -n "$BENCH_WORK" ] && [ -d "$BENCH_WORK" ]; then
		if [ "${KEEP_WORK:-0}" = 1 ]; then
			log "kept $BENCH_WORK"
		else
			rm -rf "$BENCH_WORK"
		fi
	fi
	return $rc
}

# stop_group PID...: stop some of the started processes now (and forget them).
stop_group() {
	local keep=() p q drop
	stop_pids "$@"
	for p in "${BENCH_PIDS[@]}"; do
		drop=0
		for q in "$@"; do [ "$p" = "$q" ] && drop=1; done
		[ "$drop" = 0 ] && keep+=("$p")
	done
	BENCH_PIDS=("${keep[@]}")
}

# port_free PORT: fail if something listens on 127.0.0.1:PORT (or the wildcard address).
port_free() {
	if ss -Hltn "sport = :$1" | grep -q .; then
		die "port $1 is in use; set PORT_BASE to another range"
	fi
}

# wait_until SECONDS DESCRIPTION CMD...: retry CMD every 0.2 s until it succeeds.
wait_until() {
	local secs=$1 what=$2 i
	shift 2
	for i in $(seq 1 $((secs * 5))); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	die "timed out after ${secs}s waiting for $what (logs in $BENCH_WORK/logs)"
}

# cpu_seconds PID...: user+system CPU seconds used so far by these processes.
cpu_seconds() {
	local tck total=0 pid
	tck=$(getconf CLK_TCK)
	for pid in "$@"; do
		[ -r "/proc/$pid/stat" ] || continue
		# Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the command name.
		local t
		t=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}')
		total=$((total + ${t:-0}))
	done
	awk -v t="$total" -v k="$tck" 'BEGIN { printf "%.2f", t / k }'
}

# prom_sum METRIC URL...: sum of an unlabelled Prometheus sample over several /metrics URLs.
prom_sum() {
	local metric=$1 url sum=0 v
	shift
	for url in "$@"; do
		v=$(curl -fsS --max-time 5 "$url" 2>/dev/null | awk -v m="$metric" '$1 == m { print $2 }') || v=0
		sum=$(awk -v a="$sum" -v b="${v:-0}" 'BEGIN { printf "%.6f", a + b }')
	done
	echo "$sum"
}

# machine_cpu_seconds: user + nice + system CPU seconds of the whole machine so far (all
# processes, all CPUs; interrupt and softirq time, which loopback networking mostly is and which
# /proc/PID/stat does not attribute to processes, is left out).
machine_cpu_seconds() {
	awk -v k="$(getconf CLK_TCK)" '$1 == "cpu" { printf "%.2f", ($2 + $3 + $4) / k; exit }' /proc/stat
}
