#!/usr/bin/env bash
# ingest.sh: ferry's ingest side by side with a Mosquitto edge bridging to
# the cloud, in one run: acknowledged messages/s and the edge's CPU seconds
# per 10,000 messages, for stop-and-wait publishers (10 and 50) and for 10
# publishers keeping 32 QoS 1 messages in flight; ferry in sync (PUBACK
# after the fsync of the event's commit) and none, forwarding to a
# Mosquitto cloud. Medians of RUNS (default 3), each load run against each
# edge in turn, so a busy machine slows them alike.
#
#   make bench-ingest        (= go build -o bin/ferry ./cmd/ferry && bash internal/bench/ingest.sh)
#
# Needs mosquitto. Everything on 127.0.0.1 free ports, state in a temporary
# directory, every process stopped on exit. About 4 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
FERRY=$(realpath "${FERRY:-bin/ferry}")
RUNS=${RUNS:-3}
MOSQ=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[[ -x $MOSQ ]] || { echo "ingest: needs mosquitto (apt-get install mosquitto)" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferry-ingest.XXXXXX")
declare -A PID=()
cleanup() {
	local rc=$? n
	trap - EXIT
	for n in "${!PID[@]}"; do kill -9 "${PID[$n]}" 2>/dev/null || true; done
	for n in "${!PID[@]}"; do wait "${PID[$n]}" 2>/dev/null || true; done
	[[ ${KEEP:-0} == 1 ]] && echo "ingest: kept $WORK" >&2 || rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '%s ingest: %s\n' "$(date +%T)" "$*" >&2; }
start() { local n=$1; shift; "$@" >>"$WORK/$n.log" 2>&1 & PID[$n]=$!; }
stop() { [[ -n ${PID[$1]:-} ]] || return 0; kill "${PID[$1]}" 2>/dev/null || true; wait "${PID[$1]}" 2>/dev/null || true; unset "PID[$1]"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
NEXT=$((20000 + RANDOM % 30000))
alloc() { while port_open "$NEXT"; do NEXT=$((NEXT + 1)); done; printf -v "$1" %d "$NEXT"; NEXT=$((NEXT + 1)); }
wait_port() { local i; for ((i = 0; i < 200; i++)); do port_open "$1" && return 0; sleep 0.05; done; log "nothing on $1"; exit 1; }
cpu() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
jnum() { grep -m1 "\"$1\":" "$2" | sed -E 's/.*": *([-0-9.e+]+).*/\1/'; }

alloc CLOUD; alloc EDGE; alloc MEDGE
cat >"$WORK/cloud.conf" <<EOF
listener $CLOUD 127.0.0.1
allow_anonymous true
user $(id -un)
max_queued_messages 0
EOF
mkdir -p "$WORK/medge"
cat >"$WORK/medge.conf" <<EOF
listener $MEDGE 127.0.0.1
allow_anonymous true
user $(id -un)
persistence true
persistence_location $WORK/medge/
max_queued_messages 0
max_inflight_messages 100
connection ingest
address 127.0.0.1:$CLOUD
clientid ingest-edge
cleansession false
topic bench/# out 1
EOF
ferry_conf() { # FILE DIR DURABILITY
	cat >"$1" <<EOF
gateway_id: ingest
data_dir: $2
log: {level: warn}
broker: {listen: "127.0.0.1:$EDGE", allow_anonymous: true, max_inflight: 64}
ingest: {durability: $3, routes: [{topics: ["bench/#"], stream: telemetry}]}
uplink: {endpoints: [{url: "tcp://127.0.0.1:$CLOUD"}], topic: "{gateway_id}/{stream}", batch: {max_events: 50}}
status: {listen: "", log_interval: 0}
EOF
}

start cloud "$MOSQ" -c "$WORK/cloud.conf"; wait_port "$CLOUD"
start medge "$MOSQ" -c "$WORK/medge.conf"; wait_port "$MEDGE"

LOADS=("stop-and-wait, 10 publishers|-n 10 -m 2000 -inflight 1"
	"stop-and-wait, 50 publishers|-n 50 -m 600 -inflight 1"
	"32 in flight, 10 publishers|-n 10 -m 10000 -inflight 32")
EDGES=(sync none mosquitto)
declare -A RATE CPU10K
for ((r = 1; r <= RUNS; r++)); do
	for li in "${!LOADS[@]}"; do
		args=${LOADS[$li]#*|}
		for e in "${EDGES[@]}"; do
			if [[ $e == mosquitto ]]; then
				url="tcp://127.0.0.1:$MEDGE" p=${PID[medge]}
			else
				d=$WORK/ferry-$e-$r-$li
				mkdir -p "$d"
				ferry_conf "$d/ferry.yaml" "$d/data" "$e"
				start ferry "$FERRY" run -c "$d/ferry.yaml"
				wait_port "$EDGE"
				url="tcp://127.0.0.1:$EDGE" p=${PID[ferry]}
			fi
			c0=$(cpu "$p")
			# shellcheck disable=SC2086 # args are words
			"$FERRY" bench -json -timeout 180s -qos 1 -size 100 -broker "$url" $args >"$WORK/r.json" 2>"$WORK/r.log" ||
				{ log "bench failed: $(tail -3 "$WORK/r.log")"; exit 1; }
			c1=$(cpu "$p")
			rate=$(jnum msgs_per_sec "$WORK/r.json")
			acked=$(jnum acked "$WORK/r.json")
			RATE[$li,$e]+="$rate "
			CPU10K[$li,$e]+="$(awk -v a="$c0" -v b="$c1" -v n="$acked" 'BEGIN { printf "%.3f", (b - a) / n * 10000 }') "
			log "run $r ${LOADS[$li]%%|*} $e: $(printf '%.0f' "$rate") msg/s, CPU $(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }') s"
			[[ $e == mosquitto ]] || stop ferry
		done
	done
done

echo
echo "ferry ingest beside a Mosquitto bridge: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), $(date -u +%F), medians of $RUNS"
echo "load: ferry bench -qos 1 -size 100; ferry forwards to a Mosquitto cloud, so does the bridge"
printf '%-32s %12s %12s %12s %10s %12s\n' load "sync msg/s" "none msg/s" "mosq msg/s" "sync/mosq" "CPU s/10k s|n|m"
for li in "${!LOADS[@]}"; do
	# shellcheck disable=SC2086
	s=$(median ${RATE[$li,sync]}) n=$(median ${RATE[$li,none]}) m=$(median ${RATE[$li,mosquitto]})
	# shellcheck disable=SC2086
	cs=$(median ${CPU10K[$li,sync]}) cn=$(median ${CPU10K[$li,none]}) cm=$(median ${CPU10K[$li,mosquitto]})
	printf '%-32s %12.0f %12.0f %12.0f %10.2f %12s\n' "${LOADS[$li]%%|*}" "$s" "$n" "$m" "$(awk -v a="$s" -v b="$m" 'BEGIN { print a / b }')" "$cs|$cn|$cm"
done
