#!/usr/bin/env bash
# bench/compare.sh: raftkv vs etcd vs raftexample, three nodes each, on 127.0.0.1 only, driven by
# one load generator (`raftkv bench`) with the same load: N clients spread over the three nodes,
# 10-byte keys, 100-byte values, puts first, then linearizable and local (serializable) gets.
#
#   bench/compare.sh                      # all three systems, 16 and 64 clients, 10 s per run
#   DURATION=15s CLIENT_COUNTS="16 64 256" SYSTEMS="raftkv etcd" bench/compare.sh
#
# The systems run one after another (never at the same time), each on its own temp data dirs.
# Environment:
#   DURATION        length of each measured run (default 10s)
#   CLIENT_COUNTS   client counts (default "16 64")
#   KEYS            key space (default 1000)
#   SYSTEMS         subset of "raftkv etcd raftexample"
#   LOAD_TO         "spread" (default: clients spread over the three nodes) or "leader" (every
#                   client talks to the leader: raftkv's /v1/status, etcd's maintenance status,
#                   raftexample's "became leader" log line; found once the cluster is up)
#   PORT_BASE       first port of the range used (default 31000; uses +101..+603)
#   RAFTKV_BIN      use this raftkv binary instead of `cargo build --release -p raftkv-io-real`
#   RESULTS_DIR     copy every run's JSON there (the work dir itself is removed at exit)
#   KEEP_WORK=1     keep the work dir (data dirs, logs, JSON)
#   NO_INSTALL=1    never apt-get install missing etcd / Go packages
#
# raftexample is built from Debian's golang-etcd-server-dev sources with Debian's golang-go, in
# GOPATH mode with GOPROXY=off (no network). One line is changed in a private copy: its HTTP
# server binds 127.0.0.1 instead of every interface. Note what raftexample measures: it
# acknowledges a PUT once raft has accepted the proposal (before it is committed, or even
# persisted), and its GET reads the local map (possibly stale). Its "committed" put rate is
# measured with a sentinel: after the put load stops, a sentinel key is written through every node
# and read back there; committed rate = acknowledged puts / time until the last sentinel is visible.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

DURATION=${DURATION:-10s}
CLIENT_COUNTS=${CLIENT_COUNTS:-"16 64"}
KEYS=${KEYS:-1000}
KEY_SIZE=10
VALUE_SIZE=100
SYSTEMS=${SYSTEMS:-"raftkv etcd raftexample"}
PORT_BASE=${PORT_BASE:-31000}
LOAD_TO=${LOAD_TO:-spread}
case $LOAD_TO in spread | leader) ;; *) echo "LOAD_TO must be spread or leader, not $LOAD_TO" >&2; exit 2 ;; esac
RX_SRC=${RX_SRC:-/usr/share/gocode/src/go.etcd.io/etcd/contrib/raftexample}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
make_work_dir
RES=$BENCH_WORK/results
mkdir -p "$RES" "$BENCH_WORK/bin"
declare -A UNAVAILABLE=()
declare -A LEADER_EP=() # SYS -> the leader's endpoint, when LOAD_TO=leader

port() { echo $((PORT_BASE + $1 * 100 + $2)); } # port KIND NODE
# kinds: 1 raftkv api, 2 raftkv peer, 3 etcd client, 4 etcd peer, 5 raftexample api, 6 raftexample peer
for k in 1 2 3 4 5 6; do for i in 1 2 3; do port_free "$(port $k $i)"; done; done
urls() { # urls KIND [SUFFIX]: comma-separated http://127.0.0.1:PORT of the three nodes
	local out=() i
	for i in 1 2 3; do out+=("http://127.0.0.1:$(port "$1" "$i")${2:-}"); done
	(IFS=,; echo "${out[*]}")
}

# ------------------------------------------------------------------------------------------------
# Prerequisites

if [ -n "${RAFTKV_BIN:-}" ]; then
	cp "$RAFTKV_BIN" "$BENCH_WORK/bin/raftkv"
else
	log "building raftkv (release)"
	(cd "$ROOT" && cargo build --release -q -p raftkv-io-real)
	# A private copy: a concurrent rebuild cannot change the binary under the benchmark.
	cp "$ROOT/target/release/raftkv" "$BENCH_WORK/bin/raftkv"
fi
RAFTKV=$BENCH_WORK/bin/raftkv
"$RAFTKV" bench --help >/dev/null || die "$RAFTKV has no bench subcommand"

# apt_ensure PACKAGE...: install missing Debian packages (after showing apt-cache policy).
apt_ensure() {
	local missing=() p
	for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
	[ "${#missing[@]}" = 0 ] && return 0
	apt-cache policy "${missing[@]}" >&2 || true
	if [ "${NO_INSTALL:-0}" = 1 ] || [ "$(id -u)" != 0 ]; then
		log "missing ${missing[*]} (not installing: NO_INSTALL=1 or not root)"
		return 1
	fi
	log "installing ${missing[*]}"
	apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

want() { [[ " $SYSTEMS " == *" $1 "* ]]; }

if want etcd; then
	if ! apt_ensure etcd-server etcd-client || ! command -v etcd >/dev/null; then
		UNAVAILABLE[etcd]="etcd-server is not installed and could not be installed"
	fi
fi

if want raftexample; then
	if ! apt_ensure golang-go golang-etcd-server-dev; then
		UNAVAILABLE[raftexample]="golang-go / golang-etcd-server-dev not installed"
	elif [ ! -f "$RX_SRC/main.go" ]; then
		UNAVAILABLE[raftexample]="raftexample sources not found at $RX_SRC"
	else
		log "building raftexample from $RX_SRC (GOPATH mode, offline)"
		gp=$BENCH_WORK/gopath
		mkdir -p "$gp/src"
		cp -r "$RX_SRC" "$gp/src/raftexample"
		rm -f "$gp"/src/raftexample/*_test.go
		# The only change: serve HTTP on loopback, not on every interface.
		sed -i 's|Addr: ":" + strconv.Itoa(port)|Addr: "127.0.0.1:" + strconv.Itoa(port)|' \
			"$gp/src/raftexample/httpapi.go"
		grep -q 'Addr: "127.0.0.1:"' "$gp/src/raftexample/httpapi.go" ||
			die "could not patch raftexample's listen address"
		if ! (cd "$gp/src/raftexample" &&
			env GOPATH="$gp:/usr/share/gocode" GO111MODULE=off GOPROXY=off GOFLAGS= \
				GOCACHE="$BENCH_WORK/gocache" CGO_ENABLED=0 \
				go build -o "$BENCH_WORK/bin/raftexample" . >"$BENCH_WORK/logs/raftexample-build.log" 2>&1); then
			UNAVAILABLE[raftexample]="raftexample does not build offline: $(tail -3 "$BENCH_WORK/logs/raftexample-build.log" | tr '\n' ' ')"
			log "${UNAVAILABLE[raftexample]}"
		fi
	fi
fi

# ------------------------------------------------------------------------------------------------
# Runs

# run_one SYS MODE WORKLOAD CLIENTS PIDS METRICS... -- BENCH-ARGS...
# Runs one measured load and writes $RES/SYS-WORKLOAD-cCLIENTS.json: the generator's JSON plus
# the servers' CPU seconds and (raftkv, etcd) fsync counts over the run.
run_one() {
	local sys=$1 mode=$2 wl=$3 c=$4 pids=$5 eps
	shift 5
	local metrics=()
	while [ "$1" != "--" ]; do metrics+=("$1"); shift; done
	shift
	case $sys in
	raftkv) eps=$(urls 1) ;;
	etcd) eps=$(urls 3) ;;
	raftexample) eps=$(urls 5) ;;
	esac
	eps=${LEADER_EP[$sys]:-$eps}
	local name=$sys-$wl-c$c out cpu0 cpu1 mach0 mach1 t0 t1 f0=0 f1=0 fs0=0 fs1=0 syncm summ scale
	out=$RES/$name.json
	case $sys in
	# raftkv: time of whole disk jobs (writes + syncs); etcd: WAL fsync time; both in s.
	raftkv) syncm=raftkv_disk_syncs_total summ=raftkv_disk_job_duration_seconds_sum scale=1000 ;;
	etcd) syncm=etcd_disk_wal_fsync_duration_seconds_count summ=etcd_disk_wal_fsync_duration_seconds_sum scale=1000 ;;
	*) syncm="" summ="" scale=0 ;;
	esac
	# shellcheck disable=SC2086
	cpu0=$(cpu_seconds $pids)
	mach0=$(machine_cpu_seconds)
	t0=$(date +%s.%N)
	if [ -n "$syncm" ]; then
		f0=$(prom_sum "$syncm" "${metrics[@]}")
		fs0=$(prom_sum "$summ" "${metrics[@]}")
	fi
	"$RAFTKV" bench --mode "$mode" --endpoints "$eps" --clients "$c" --duration "$DURATION" \
		--keys "$KEYS" --key-size "$KEY_SIZE" --value-size "$VALUE_SIZE" --timeout-ms 10000 \
		--progress-ms 2000 --json "$@" >"$out.raw" 2>"$BENCH_WORK/logs/bench-$name.log" ||
		log "bench $name exited with an error (see its log)"
	# shellcheck disable=SC2086
	cpu1=$(cpu_seconds $pids)
	mach1=$(machine_cpu_seconds)
	t1=$(date +%s.%N)
	if [ -n "$syncm" ]; then
		f1=$(prom_sum "$syncm" "${metrics[@]}")
		fs1=$(prom_sum "$summ" "${metrics[@]}")
	fi
	if ! jq -e . "$out.raw" >/dev/null 2>&1; then
		log "no result for $name"
		return 0
	fi
	jq --argjson cpu "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { print b - a }')" \
		--argjson wall "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" \
		--argjson mach "$(awk -v a="$mach0" -v b="$mach1" 'BEGIN { print b - a }')" \
		--argjson syncs "$(awk -v a="$f0" -v b="$f1" 'BEGIN { print b - a }')" \
		--argjson sync_ms "$(awk -v a="$fs0" -v b="$fs1" -v k="$scale" 'BEGIN { print (b - a) * k }')" \
		--arg syncm "$syncm" \
		'. + {wall_s: $wall, server_cpu_s: $cpu, machine_cpu_s: $mach, fsyncs_all_nodes: (if $syncm == "" then null else $syncs end),
		      disk_ms_all_nodes: (if $syncm == "" then null else $sync_ms end)}' \
		"$out.raw" >"$out"
	rm -f "$out.raw"
	jq -r --arg n "$name" '"\($n): \(.ops_per_sec) ops/s, p50 \(.latency_us.all.p50 / 1000) ms, p99 \(.latency_us.all.p99 / 1000) ms, errors \(.errors_total)" +
		(if .sentinel then ", sentinel \(.sentinel.visible_after_ms // .sentinel.error) ms" else "" end)' "$out" >&2
	if [ -n "${RESULTS_DIR:-}" ]; then mkdir -p "$RESULTS_DIR" && cp "$out" "$RESULTS_DIR/"; fi
}

# workloads SYS MODE PIDS METRICS...: puts, then linearizable gets, then local gets.
workloads() {
	local sys=$1 mode=$2 pids=$3 c
	shift 3
	for c in $CLIENT_COUNTS; do
		run_one "$sys" "$mode" put "$c" "$pids" "$@" -- --put-ratio 1 --sentinel
	done
	if [ "$sys" != raftexample ]; then
		for c in $CLIENT_COUNTS; do
			run_one "$sys" "$mode" getlin "$c" "$pids" "$@" -- --put-ratio 0 --consistency linearizable
		done
	fi
	for c in $CLIENT_COUNTS; do
		run_one "$sys" "$mode" getlocal "$c" "$pids" "$@" -- --put-ratio 0 --consistency local
	done
}

run_raftkv() {
	local i pids=() d=$BENCH_WORK/raftkv
	mkdir -p "$d"
	log "raftkv: starting 3 nodes"
	for i in 1 2 3; do
		start_bg "raftkv$i" "$d" "$RAFTKV" --id "$i" --cluster "$(urls 2)" --host 127.0.0.1 \
			--port "$(port 1 "$i")" --data-dir "$d/raftkv-$i"
		pids+=("$(eval echo "\$PID_raftkv$i")")
	done
	for i in 1 2 3; do
		wait_until 30 "raftkv node $i healthy" curl -fsS --max-time 2 "http://127.0.0.1:$(port 1 "$i")/health"
	done
	log "raftkv: $(curl -fsS "http://127.0.0.1:$(port 1 1)/v1/status" | jq -c '{leader, term}')"
	if [ "$LOAD_TO" = leader ]; then
		i=$(curl -fsS "http://127.0.0.1:$(port 1 1)/v1/status" | jq -r .leader)
		[[ $i =~ ^[123]$ ]] || die "raftkv: no leader to load ($i)"
		LEADER_EP[raftkv]="http://127.0.0.1:$(port 1 "$i")"
		log "raftkv: load to the leader, node $i"
	fi
	workloads raftkv raftkv "${pids[*]}" $(urls 1 /metrics | tr , ' ')
	for i in 1 2 3; do
		curl -fsS "http://127.0.0.1:$(port 1 "$i")/metrics" >"$RES/raftkv-metrics-$i.txt" || true
	done
	stop_group "${pids[@]}"
}

run_etcd() {
	local i pids=() d=$BENCH_WORK/etcd cluster=()
	mkdir -p "$d"
	for i in 1 2 3; do cluster+=("n$i=http://127.0.0.1:$(port 4 "$i")"); done
	log "etcd: starting 3 members ($(etcd --version | head -1))"
	for i in 1 2 3; do
		start_bg "etcd$i" "$d" etcd --name "n$i" --data-dir "$d/n$i" \
			--listen-client-urls "http://127.0.0.1:$(port 3 "$i")" \
			--advertise-client-urls "http://127.0.0.1:$(port 3 "$i")" \
			--listen-peer-urls "http://127.0.0.1:$(port 4 "$i")" \
			--initial-advertise-peer-urls "http://127.0.0.1:$(port 4 "$i")" \
			--initial-cluster "$(IFS=,; echo "${cluster[*]}")" \
			--initial-cluster-state new --initial-cluster-token "raftkv-bench-$$" \
			--logger zap --log-outputs stderr --log-level warn
		pids+=("$(eval echo "\$PID_etcd$i")")
	done
	for i in 1 2 3; do
		wait_until 30 "etcd member $i healthy" \
			sh -c "curl -fsS --max-time 2 http://127.0.0.1:$(port 3 "$i")/health | grep -q '\"health\":\"true\"'"
	done
	if [ "$LOAD_TO" = leader ]; then
		local st
		for i in 1 2 3; do
			st=$(curl -fsS -XPOST "http://127.0.0.1:$(port 3 "$i")/v3/maintenance/status" -d '{}')
			if [ "$(jq -r .leader <<<"$st")" = "$(jq -r .header.member_id <<<"$st")" ]; then
				LEADER_EP[etcd]="http://127.0.0.1:$(port 3 "$i")"
				log "etcd: load to the leader, member $i"
			fi
		done
		[ -n "${LEADER_EP[etcd]:-}" ] || die "etcd: no leader to load"
	fi
	workloads etcd etcd "${pids[*]}" $(urls 3 /metrics | tr , ' ')
	stop_group "${pids[@]}"
}

rx_ready() { # every node accepts a put and then shows it
	local i p
	for i in 1 2 3; do
		p=$(port 5 "$i")
		curl -fsS --max-time 2 -XPUT "http://127.0.0.1:$p/ready-$i" -d ok >/dev/null || return 1
	done
	for i in 1 2 3; do
		p=$(port 5 "$i")
		[ "$(curl -fsS --max-time 2 "http://127.0.0.1:$p/ready-$i")" = ok ] || return 1
	done
}

run_raftexample() {
	local i pids=() d=$BENCH_WORK/raftexample
	mkdir -p "$d"
	log "raftexample: starting 3 nodes"
	for i in 1 2 3; do
		start_bg "raftexample$i" "$d" "$BENCH_WORK/bin/raftexample" --id "$i" --cluster "$(urls 6)" \
			--port "$(port 5 "$i")"
		pids+=("$(eval echo "\$PID_raftexample$i")")
	done
	wait_until 30 "raftexample cluster to commit a put on every node" rx_ready
	if [ "$LOAD_TO" = leader ]; then
		# etcd's raft logs "<id in hex> became leader at term <T>": the highest term wins.
		i=$(cat "$BENCH_WORK"/logs/raftexample[123].log |
			sed -n 's/.* \([0-9a-f]*\) became leader at term \([0-9]*\).*/\2 \1/p' | sort -n | tail -1 | cut -d' ' -f2)
		[[ $i =~ ^[123]$ ]] || die "raftexample: no leader in its logs ($i)"
		LEADER_EP[raftexample]="http://127.0.0.1:$(port 5 "$i")"
		log "raftexample: load to the leader, node $i"
	fi
	workloads raftexample raftexample "${pids[*]}"
	stop_group "${pids[@]}"
}

start_time=$(date +%s)
for sys in $SYSTEMS; do
	if [ -n "${UNAVAILABLE[$sys]:-}" ]; then
		log "skipping $sys: ${UNAVAILABLE[$sys]}"
		continue
	fi
	"run_$sys"
done

# ------------------------------------------------------------------------------------------------
# Report

# field SYS WORKLOAD CLIENTS JQ-EXPR: a value from a run's JSON, or "-" when absent.
field() {
	local f=$RES/$1-$2-c$3.json
	if [ -f "$f" ]; then jq -r "($4) // \"-\"" "$f"; else echo "-"; fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
fmt_ops() { awk -v a="$1" 'BEGIN { if (a == "-") print "-"; else printf "%.0f", a }'; }
ms() { awk -v a="$1" 'BEGIN { if (a == "-") print "-"; else printf "%.2f", a / 1000 }'; }

echo
echo "raftkv vs etcd $(etcd --version 2>/dev/null | awk 'NR==1 {print $3}') (v3 JSON gateway) vs raftexample (etcd 3.4 sources): 3 nodes each on 127.0.0.1"
if [ "$LOAD_TO" = leader ]; then where="every client on the leader"; else where="clients spread over the 3 nodes"; fi
echo "load: raftkv bench, $where, $DURATION per run, $KEYS keys of $KEY_SIZE B, values of $VALUE_SIZE B; $(nproc) CPUs shared by servers and generator"
echo
hdr="%-24s %4s | %9s %6s %7s | %9s %6s %7s | %9s %6s %7s | %7s %7s\n"
# shellcheck disable=SC2059
printf "$hdr" "" "" "raftkv" "" "" "etcd" "" "" "raftexample" "" "" "raftkv/" "raftkv/"
# shellcheck disable=SC2059
printf "$hdr" "workload" "cli" "ops/s" "p50ms" "p99ms" "ops/s" "p50ms" "p99ms" "ops/s" "p50ms" "p99ms" "etcd" "rxample"
printf '%s\n' "$(printf '%.0s-' $(seq 1 128))"
row() { # row LABEL WORKLOAD CLIENTS
	local label=$1 wl=$2 c=$3 cols=() sys o p50 p99 ops_r ops_e ops_x
	for sys in raftkv etcd raftexample; do
		if [ "$wl" = putc ]; then
			o=$(field "$sys" put "$c" '.sentinel.committed_puts_per_sec')
			p50="" p99=""
		elif [ "$sys" = raftexample ] && [ "$wl" = getlin ]; then
			o="n/a" p50="" p99=""
		else
			o=$(field "$sys" "$wl" "$c" '.ops_per_sec')
			p50=$(ms "$(field "$sys" "$wl" "$c" '.latency_us.all.p50')")
			p99=$(ms "$(field "$sys" "$wl" "$c" '.latency_us.all.p99')")
		fi
		case $sys in
		raftkv) ops_r=$o ;;
		etcd) ops_e=$o ;;
		raftexample) ops_x=$o ;;
		esac
		[ "$o" != "n/a" ] && o=$(fmt_ops "$o")
		cols+=("$o" "$p50" "$p99")
	done
	# shellcheck disable=SC2059
	printf "$hdr" "$label" "$c" "${cols[@]}" "$(ratio "$ops_r" "$ops_e")" "$(ratio "$ops_r" "${ops_x/n\/a/-}")"
}
for c in $CLIENT_COUNTS; do
	row "put (acknowledged)" put "$c"
	row "put (committed*)" putc "$c"
done
for c in $CLIENT_COUNTS; do row "get linearizable" getlin "$c"; done
for c in $CLIENT_COUNTS; do row "get local/serializable" getlocal "$c"; done
echo
echo "* committed = acknowledged puts / (load time + time until a sentinel written through every node"
echo "  after the load is visible on that node). raftkv and etcd acknowledge after commit (and apply),"
echo "  so for them it equals the acknowledged rate; raftexample acknowledges before commit."
echo "  raftexample has no linearizable read (n/a); its GET is a local, possibly stale map lookup."
echo
echo "details, in cores of $(nproc) (CPU seconds / wall time of the run, sentinel wait included):"
echo "srv = the 3 server processes, gen = the load generator, other = everything else busy on the"
echo "machine meanwhile (user+system time; on a shared machine other"
echo "work competes for the same cores when this is not ~0); srv us/op = server CPU per acknowledged"
echo "request (for puts, including the CPU spent committing them during the sentinel wait)"
dfmt="%-26s %8s %6s %6s %5s %5s %6s %9s %11s %13s %9s %10s\n"
# shellcheck disable=SC2059
printf "$dfmt" "run" "ops/s" "errors" "404s" "srv" "gen" "other" "srv us/op" "sentinel ms" "fsyncs/s/node" "puts/sync" "ms/sync(*)"
for f in "$RES"/*.json; do
	[ -f "$f" ] || continue
	jq -r --arg n "$(basename "$f" .json)" '
		def r(x): if x == null then "-" else ((x * 100 | round) / 100 | tostring) end;
		[ $n, (.ops_per_sec | round | tostring), (.errors_total | tostring), (.not_found | tostring),
		  r(.server_cpu_s / .wall_s), r(.generator_cpu_s / .wall_s),
		  r([(.machine_cpu_s - .server_cpu_s - .generator_cpu_s) / .wall_s, 0] | max),
		  (if .ok > 0 then (.server_cpu_s / .ok * 1e6 | round | tostring) else "-" end),
		  (if .sentinel then (.sentinel.visible_after_ms // "fail" | tostring) else "-" end),
		  (if .fsyncs_all_nodes then r(.fsyncs_all_nodes / 3 / .elapsed_s) else "-" end),
		  (if .fsyncs_all_nodes and .fsyncs_all_nodes > 0 and .puts > 0 then r(.puts / (.fsyncs_all_nodes / 3)) else "-" end),
		  (if .fsyncs_all_nodes and .fsyncs_all_nodes > 0 then r(.disk_ms_all_nodes / .fsyncs_all_nodes) else "-" end)
		] | @tsv' "$f"
done | while IFS=$'\t' read -r a b c d e g o u h i j k; do
	# shellcheck disable=SC2059
	printf "$dfmt" "$a" "$b" "$c" "$d" "$e" "$g" "$o" "$u" "$h" "$i" "$j" "$k"
done
echo "(*) raftkv: whole disk job (writes + syncs) per sync, from raftkv_disk_job_duration_seconds_sum;"
echo "    etcd: WAL fsync time per fsync (etcd_disk_wal_fsync_duration_seconds); raftexample exports neither."
for sys in "${!UNAVAILABLE[@]}"; do echo "not measured: $sys: ${UNAVAILABLE[$sys]}"; done
for f in "$RES"/*.json; do
	[ -f "$f" ] || continue
	jq -r --arg n "$(basename "$f" .json)" 'select(.errors_total > 0) | "errors in \($n): \(.errors) e.g. \(.error_examples)"' "$f"
done
echo
echo "finished in $(($(date +%s) - start_time)) s"
