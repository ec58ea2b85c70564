#!/usr/bin/env bash
# spine.sh: measure ferry's performance targets on this machine, side by
# side with the setup most users would otherwise pick (a Mosquitto edge
# broker bridging to the cloud), and print a results table.
#
#   go build -o bin/ferry ./cmd/ferry && bash internal/bench/spine.sh
#
# Needs mosquitto and mosquitto_sub (Debian: mosquitto mosquitto-clients).
# Everything listens on free high ports of 127.0.0.1 only; state lives in a
# temporary directory; every process started here is stopped on exit. Takes
# about 5 to 6 minutes on 2 cores. Rates are the median of RUNS (default 3) runs.
#
# Environment: FERRY (default bin/ferry), RUNS (3), KEEP=1 keeps the work
# directory (configs and logs) for a look afterwards.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
FERRY=${FERRY:-bin/ferry}
RUNS=${RUNS:-3}
MOSQ=$(command -v mosquitto || echo /usr/sbin/mosquitto)
MSUB=$(command -v mosquitto_sub || true)
[[ -x $FERRY ]] || { echo "spine: $FERRY missing; run: go build -o bin/ferry ./cmd/ferry" >&2; exit 2; }
[[ -x $MOSQ && -n $MSUB ]] || { echo "spine: needs mosquitto and mosquitto_sub (apt-get install mosquitto mosquitto-clients)" >&2; exit 2; }
FERRY=$(realpath "$FERRY")

ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true # 1000 idle sensors
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferry-spine.XXXXXX")
declare -A PID=() # name -> pid of every process we started and have not reaped

cleanup() {
	local rc=$? n
	trap - EXIT INT TERM
	for n in "${!PID[@]}"; do kill -9 "${PID[$n]}" 2>/dev/null || true; done
	for n in "${!PID[@]}"; do wait "${PID[$n]}" 2>/dev/null || true; done
	if [[ ${KEEP:-0} == 1 ]]; then echo "spine: work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s spine: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# --- processes ---------------------------------------------------------------

# start NAME CMD...: run CMD in the background, output to $WORK/NAME.log.
start() {
	local n=$1
	shift
	"$@" >>"$WORK/$n.log" 2>&1 &
	PID[$n]=$!
}
# stop NAME [SIGNAL]: signal (default TERM) and reap.
stop() {
	local n=$1 sig=${2:-TERM}
	[[ -n ${PID[$n]:-} ]] || return 0
	kill -"$sig" "${PID[$n]}" 2>/dev/null || true
	wait "${PID[$n]}" 2>/dev/null || true
	unset "PID[$n]"
}
# reap NAME: wait for a process to end by itself.
reap() {
	wait "${PID[$1]}" || true
	unset "PID[$1]"
}

# --- ports -------------------------------------------------------------------

NEXT_PORT=$((20000 + RANDOM % 30000))
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# alloc VAR: set VAR to a loopback port nothing listens on.
alloc() {
	while port_open "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
	printf -v "$1" %d "$NEXT_PORT"
	NEXT_PORT=$((NEXT_PORT + 1))
}
wait_port() {
	local i
	for ((i = 0; i < 200; i++)); do port_open "$1" && return 0; sleep 0.05; done
	die "nothing listens on 127.0.0.1:$1 (see $WORK/*.log)"
}

alloc CLOUD
alloc EDGE
alloc STATUS
alloc MEDGE

# --- helpers -----------------------------------------------------------------

now() { date +%s.%N; }
# Status JSON of the running ferry, and fields of it (one stream).
status() { "$FERRY" status -addr "127.0.0.1:$STATUS" -json 2>/dev/null; }
jfield() { grep -m1 "\"$1\"" | sed -E 's/.*": *"?([^",]*)"?,?$/\1/'; } # first "key": value
# poll_backlog: set BACKLOG to the stream's backlog (-1 if unknown). Pure
# bash over /dev/tcp, so that polling it often costs no processes.
poll_backlog() {
	local fd line
	BACKLOG=-1
	exec {fd}<>"/dev/tcp/127.0.0.1/$STATUS" || return 0
	printf 'GET /status HTTP/1.0\r\nHost: spine\r\n\r\n' >&"$fd"
	while IFS= read -r line <&"$fd"; do
		if [[ $line =~ \"events\":\ ([0-9]+) ]]; then
			BACKLOG=${BASH_REMATCH[1]}
			break
		fi
	done
	exec {fd}<&-
}
# Memory of a process in MB (10^6 bytes): rss (VmRSS), hwm (VmHWM),
# anon (RssAnon), file (RssFile).
mem() {
	local k
	case $2 in rss) k=VmRSS ;; hwm) k=VmHWM ;; anon) k=RssAnon ;; file) k=RssFile ;; esac
	awk -v k="$k:" '$1 == k { printf "%.1f", $2 * 1024 / 1e6 }' "/proc/$1/status"
}
# CPU seconds (user+system) a process has used.
cpu() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
# pct CPU0 CPU1 WALL0: CPU used since WALL0 as a percentage of one core.
pct() { awk -v a="$1" -v b="$2" -v w="$3" -v n="$(now)" 'BEGIN { printf "%.0f", (b - a) / (n - w) * 100 }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ms() { awk -v n="$1" 'BEGIN { printf "%.2f", n / 1e6 }'; } # ns -> ms
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b > 0 ? a / b : 0) }'; }
# jnum KEY FILE: the first numeric "KEY": value in a bench JSON report.
jnum() { grep -m1 "\"$1\":" "$2" | sed -E 's/.*": *([-0-9.e+]+).*/\1/'; }
int() { awk -v n="$1" 'BEGIN { printf "%.0f", n }'; }
# child_cpu: set CHILD_CPU to the CPU seconds this shell's reaped children
# have used (the builtin times, which must run in this shell).
child_cpu() {
	times >"$WORK/times"
	CHILD_CPU=$(awk 'NR == 2 { for (i = 1; i <= NF; i++) { split($i, a, "m"); s += a[1] * 60 + a[2] } } END { printf "%.2f", s }' "$WORK/times")
}

BENCH=(-n 50 -m 2000 -qos 1 -size 100 -inflight 1)
# Filling a backlog for the drain runs: same load with a wider window, as
# the fill rate is not what is measured there.
FILL=(-n 50 -m 2000 -qos 1 -size 100 -inflight 20)
FILLED=100000

# --- the "cloud": Mosquitto ----------------------------------------------------

mkdir -p "$WORK/cloud"
cat >"$WORK/cloud.conf" <<EOF
listener $CLOUD 127.0.0.1
allow_anonymous true
# Started as root, mosquitto would switch to user mosquitto, which cannot
# write the persistence file in our directory.
user $(id -un)
max_queued_messages 0
max_inflight_messages 0
# The drain runs' subscriber keeps its session across the cloud's restart.
persistence true
persistence_location $WORK/cloud/
EOF
cloud_up() { start cloud "$MOSQ" -c "$WORK/cloud.conf"; wait_port "$CLOUD"; }
cloud_down() { stop cloud; }

# The drain subscriber: QoS 1, persistent session, one line per message with
# its arrival time. sub_start FILE, sub_stop.
sub_start() {
	"$MSUB" -h 127.0.0.1 -p "$CLOUD" -i spine-sub -c -q 1 -t '#' -F '%U' >"$1" 2>>"$WORK/sub.log" &
	PID[sub]=$!
}
sub_stop() { stop sub; }
# sub_clear: end the subscriber's persistent session (a clean connection).
sub_clear() { "$MSUB" -h 127.0.0.1 -p "$CLOUD" -i spine-sub -q 1 -t '#' -E >/dev/null 2>>"$WORK/sub.log" || true; }

# --- ferry -------------------------------------------------------------------

# ferry_conf FILE DATA_DIR BATCH: with BATCH > 1 the cloud topic leaves
# out {source}: a batch holds events of one rendered topic only, and 50
# interleaved publishers would otherwise leave batches of about one event.
ferry_conf() {
	local topic='{gateway_id}/{stream}/{source}'
	[[ $3 == 1 ]] || topic='{gateway_id}/{stream}'
	cat >"$1" <<EOF
gateway_id: spine
data_dir: $2
log: {level: warn}
broker: {listen: "127.0.0.1:$EDGE", allow_anonymous: true}
ingest:
  durability: sync
  routes:
    - topics: ["bench/#"]
      stream: telemetry
uplink:
  endpoints: [{url: "tcp://127.0.0.1:$CLOUD"}]
  # Reconnect promptly after the cloud's outage; the drain rate is timed
  # from the reconnection, so this only shortens the script.
  backoff: {min: 100ms, max: 1s}
  topic: "$topic"
  batch: {max_events: $3}
status: {listen: "127.0.0.1:$STATUS", log_interval: 0}
EOF
}
FERRY_N=0
# ferry_up BATCH [ENV...]: a fresh gateway with an empty buffer.
ferry_up() {
	local batch=$1
	shift
	FERRY_N=$((FERRY_N + 1))
	FDIR=$WORK/ferry$FERRY_N
	mkdir -p "$FDIR"
	ferry_conf "$FDIR/ferry.yaml" "$FDIR/data" "$batch"
	ferry_restart "$@"
}
# ferry_restart [ENV...]: start ferry on $FDIR's config and state.
ferry_restart() {
	start ferry env "$@" "$FERRY" run -c "$FDIR/ferry.yaml"
	wait_port "$EDGE"
	wait_port "$STATUS"
}
ferry_down() { stop ferry "${1:-TERM}"; }
# wait_link: until ferry's uplink is connected.
wait_link() {
	local i
	for ((i = 0; i < 100; i++)); do [[ $(status | jfield Connected) == true ]] && return 0; sleep 0.1; done
	die "ferry's uplink did not connect"
}

# --- Mosquitto edge, bridged to the cloud ----------------------------------------

mkdir -p "$WORK/medge"
cat >"$WORK/medge.conf" <<EOF
listener $MEDGE 127.0.0.1
allow_anonymous true
user $(id -un)
# As Debian ships it: persistence on, autosave_interval left at its
# default (1800 s).
persistence true
persistence_location $WORK/medge/
# Without this the bridge keeps only 1000 messages queued in an outage.
max_queued_messages 0
# The same window as ferry's uplink.inflight default.
max_inflight_messages 100

connection spine
address 127.0.0.1:$CLOUD
clientid spine-edge
cleansession false
topic bench/# out 1
# Reconnect promptly after the cloud's outage (timing starts at the
# reconnection anyway).
restart_timeout 1 2
EOF
medge_up() {
	start medge "$MOSQ" -c "$WORK/medge.conf"
	wait_port "$MEDGE"
}
medge_down() { stop medge "${1:-TERM}"; }

# bench OUT ARGS...: run ferry bench, JSON report to OUT, log to OUT.log.
bench() {
	local out=$1
	shift
	"$FERRY" bench -json -timeout 120s "$@" >"$out" 2>"$out.log" || die "bench $* (see $out.log, $WORK/ferry.log)"
}

# --- run ---------------------------------------------------------------------

CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
log "work dir $WORK; ports cloud $CLOUD, ferry $EDGE (status $STATUS), mosquitto edge $MEDGE"
log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
awk -v n="$(nproc)" '{ exit !($1 > 0.75 * n) }' /proc/loadavg && log "WARNING: the machine is busy; figures will be noisy"
T0=$(date +%s)
cloud_up

# a. Durable ingest: ferry, durability sync, uplink forwarding to the cloud.
declare -a A_RATE A_P50 A_P99 A_HWM A_CPU A_BCPU A_COMMITS A_COMMIT_AVG
for ((r = 1; r <= RUNS; r++)); do
	ferry_up 1
	wait_link
	p=${PID[ferry]}
	child_cpu
	c0=$(cpu "$p") b0=$CHILD_CPU w0=$(now)
	bench "$WORK/a$r.json" -broker "tcp://127.0.0.1:$EDGE" "${BENCH[@]}"
	A_CPU+=("$(pct "$c0" "$(cpu "$p")" "$w0")")
	child_cpu
	A_BCPU+=("$(pct "$b0" "$CHILD_CPU" "$w0")")
	st=$(status)
	A_COMMITS+=("$(jfield commits <<<"$st")")
	A_COMMIT_AVG+=("$(jfield commit_avg <<<"$st")")
	A_RATE+=("$(int "$(jnum msgs_per_sec "$WORK/a$r.json")")")
	A_P50+=("$(ms "$(jnum p50_ns "$WORK/a$r.json")")")
	A_P99+=("$(ms "$(jnum p99_ns "$WORK/a$r.json")")")
	A_HWM+=("$(mem "$p" hwm)")
	log "a. ferry ingest run $r: ${A_RATE[-1]} msg/s, PUBACK p50 ${A_P50[-1]} ms p99 ${A_P99[-1]} ms, VmHWM ${A_HWM[-1]} MB, CPU ferry ${A_CPU[-1]}% bench ${A_BCPU[-1]}%, ${A_COMMITS[-1]} commits avg ${A_COMMIT_AVG[-1]}"
	ferry_down
done

# d. The same ingest into a Mosquitto edge broker bridging to the cloud.
declare -a M_RATE M_P50 M_P99 M_HWM M_CPU M_BCPU
medge_up
for ((r = 1; r <= RUNS; r++)); do
	p=${PID[medge]}
	child_cpu
	c0=$(cpu "$p") b0=$CHILD_CPU w0=$(now)
	bench "$WORK/ma$r.json" -broker "tcp://127.0.0.1:$MEDGE" "${BENCH[@]}"
	M_CPU+=("$(pct "$c0" "$(cpu "$p")" "$w0")")
	child_cpu
	M_BCPU+=("$(pct "$b0" "$CHILD_CPU" "$w0")")
	M_RATE+=("$(int "$(jnum msgs_per_sec "$WORK/ma$r.json")")")
	M_P50+=("$(ms "$(jnum p50_ns "$WORK/ma$r.json")")")
	M_P99+=("$(ms "$(jnum p99_ns "$WORK/ma$r.json")")")
	M_HWM+=("$(mem "${PID[medge]}" hwm)")
	log "d. mosquitto ingest run $r: ${M_RATE[-1]} msg/s, PUBACK p50 ${M_P50[-1]} ms p99 ${M_P99[-1]} ms, VmHWM ${M_HWM[-1]} MB, CPU mosquitto ${M_CPU[-1]}% bench ${M_BCPU[-1]}%"
done

# b/d. Drain: with the cloud down, fill a backlog of 100,000; start the
# cloud and time from the edge's reconnection to the end of the backlog.
# A cloud subscriber (persistent session) timestamps every arrival, which
# times Mosquitto and ferry the same way.
# drain_ferry BATCH RUN: sets rate (to backlog 0), subrate (to the last
# cloud arrival), msgs (cloud messages) and secs.
drain_ferry() {
	local batch=$1 r=$2 t0 t1 s1 n f=$WORK/b$1-$2
	ferry_up "$batch"
	wait_link
	sub_start "$f.sub0"
	sleep 0.3
	sub_stop
	cloud_down
	bench "$f.json" -broker "tcp://127.0.0.1:$EDGE" "${FILL[@]}"
	poll_backlog
	[[ $BACKLOG == "$FILLED" ]] || die "ferry backlog $BACKLOG after the fill, want $FILLED"
	c0=$(cpu "${PID[ferry]}")
	cloud_up
	sub_start "$f.sub"
	for ((n = 0; n < 2400; n++)); do
		poll_backlog
		[[ $BACKLOG == 0 ]] && break
		sleep 0.025
	done
	t1=$(now)
	[[ $BACKLOG == 0 ]] || die "ferry backlog did not drain"
	t0=$(date -d "$(status | jfield LastConnected)" +%s.%N)
	cpus=$(awk -v a="$c0" -v b="$(cpu "${PID[ferry]}")" 'BEGIN { printf "%.1f", b - a }')
	# Wait for the subscriber to have every message the uplink sent.
	fwd=$(status | jfield ForwardedMessages)
	for ((n = 0; n < 200; n++)); do
		(($(wc -l <"$f.sub") >= fwd)) && break
		sleep 0.05
	done
	sub_stop
	s1=$(tail -n1 "$f.sub")
	n=$(wc -l <"$f.sub")
	ferry_down
	read -r rate subrate msgs secs < <(awk -v n="$FILLED" -v t0="$t0" -v t1="$t1" -v s1="$s1" -v m="$n" \
		'BEGIN { printf "%.0f %.0f %d %.2f\n", n / (t1 - t0), n / (s1 - t0), m, t1 - t0 }')
}
declare -a B1_RATE B1_SUB B50_RATE B50_SUB
for ((r = 1; r <= RUNS; r++)); do
	for batch in 1 50; do
		drain_ferry "$batch" "$r"
		log "b. ferry drain, uplink.batch.max_events $batch, run $r: $rate events/s to backlog 0 (${secs}s), $subrate events/s to the last cloud arrival ($msgs cloud messages), ferry CPU ${cpus}s"
		if [[ $batch == 1 ]]; then B1_RATE+=("$rate") B1_SUB+=("$subrate"); else B50_RATE+=("$rate") B50_SUB+=("$subrate"); fi
	done
done

# The Mosquitto edge's drain: t0 is the bridge's connection notification on
# the edge ($SYS/broker/connection/.../state 1), t1 the last arrival.
declare -a MD_RATE MD_GOT
for ((r = 1; r <= RUNS; r++)); do
	f=$WORK/md$r
	sub_start "$f.sub0"
	sleep 0.3
	sub_stop
	cloud_down
	"$MSUB" -h 127.0.0.1 -p "$MEDGE" -t '$SYS/broker/connection/+/state' -F '%U %p' >"$f.notif" 2>>"$WORK/notif.log" &
	PID[notif]=$!
	bench "$f.json" -broker "tcp://127.0.0.1:$MEDGE" "${FILL[@]}"
	cloud_up
	sub_start "$f.sub"
	for ((n = 0; n < 300; n++)); do
		grep -q ' 1$' "$f.notif" && break
		sleep 0.1
	done
	got=0
	for ((n = 0; n < 1200; n++)); do
		got=$(wc -l <"$f.sub")
		((got >= FILLED)) && break
		# Stop waiting once arrivals have stopped for 3 s.
		if ((n % 60 == 59)); then [[ $got == "${prev:-}" ]] && break; prev=$got; fi
		sleep 0.05
	done
	unset prev
	sleep 0.5
	sub_stop
	stop notif
	got=$(wc -l <"$f.sub")
	t0=$(awk '$2 == 1 { t = $1 } END { print t }' "$f.notif")
	[[ -n $t0 ]] || die "no bridge connection notification from the Mosquitto edge"
	MD_GOT+=("$got")
	MD_RATE+=("$(awk -v n="$got" -v t0="$t0" -v s1="$(tail -n1 "$f.sub")" 'BEGIN { printf "%.0f", n / (s1 - t0) }')")
	log "d. mosquitto drain run $r: ${MD_RATE[-1]} msg/s to the last cloud arrival, $got of $FILLED arrived"
done
medge_down
sub_clear

# c. Idle: 1,000 connected sensors publishing nothing.
ferry_up 1 GODEBUG=gctrace=1
wait_link
p=${PID[ferry]}
sleep 2
IDLE0=$(mem "$p" rss)
start idle "$FERRY" bench -broker "tcp://127.0.0.1:$EDGE" -n 1000 -m 0 -hold 20s
for ((n = 0; n < 300; n++)); do
	[[ $(status | jfield clients) == 1000 ]] && break
	sleep 0.1
done
[[ $(status | jfield clients) == 1000 ]] || die "1000 sensors did not connect (see $WORK/idle.log)"
sleep 10
IDLE=$(mem "$p" rss) IDLE_ANON=$(mem "$p" anon) IDLE_FILE=$(mem "$p" file) IDLE_THREADS=$(awk '$1 == "Threads:" { print $2 }' "/proc/$p/status")
IDLE_GC=$(grep '^gc ' "$WORK/ferry.log" | tail -n1 | grep -oE '[0-9]+->[0-9]+->[0-9]+ MB, [0-9]+ MB goal, [0-9]+ MB stacks' || echo "no GC line")
log "c. ferry idle: VmRSS $IDLE MB with 1000 sensors (anon $IDLE_ANON, file $IDLE_FILE), $IDLE0 MB before; last GC: $IDLE_GC"
reap idle
ferry_down

# The same for the Mosquitto edge.
medge_up
sleep 1
MIDLE0=$(mem "${PID[medge]}" rss)
start idle "$FERRY" bench -broker "tcp://127.0.0.1:$MEDGE" -n 1000 -m 0 -hold 12s
sleep 10
MIDLE=$(mem "${PID[medge]}" rss)
log "c. mosquitto idle: VmRSS $MIDLE MB with 1000 sensors, $MIDLE0 MB before"
reap idle
medge_down

# e. Loss after SIGKILL: 20 publishers at QoS 1 publishing continuously,
# checked end to end at the cloud by ferry bench's subscriber (persistent
# session). "live": the edge is killed 2 s into publishing and restarted
# 1 s later. "outage": the cloud goes down 1 s into publishing, the edge
# is killed 1 s later, restarted after 1 s, and the cloud returns 1 s
# after that, so the edge holds a backlog when it dies.
# crash WHO SCENARIO: WHO is ferry or mosquitto; report in $WORK/e-WHO-SCENARIO.json.
crash() {
	local who=$1 how=$2 f=$WORK/e-$1-$2 broker i
	if [[ $who == ferry ]]; then
		ferry_up 1
		wait_link
		broker=tcp://127.0.0.1:$EDGE
	else
		rm -rf "$WORK/medge" && mkdir -p "$WORK/medge"
		medge_up
		broker=tcp://127.0.0.1:$MEDGE
	fi
	"$FERRY" bench -json -timeout 120s -broker "$broker" -n 20 -m 3000 -qos 1 -size 100 -inflight 1 \
		-sub "tcp://127.0.0.1:$CLOUD" -sub-topic '#' -settle 10s >"$f.json" 2>"$f.log" &
	PID[crashbench]=$!
	for ((i = 0; i < 200; i++)); do grep -q 'bench: publishing' "$f.log" 2>/dev/null && break; sleep 0.05; done
	if [[ $how == outage ]]; then
		sleep 1
		cloud_down
		sleep 1
	else
		sleep 2
	fi
	if [[ $who == ferry ]]; then ferry_down KILL; else medge_down KILL; fi
	sleep 1
	if [[ $who == ferry ]]; then ferry_restart; else medge_up; fi
	if [[ $how == outage ]]; then
		sleep 1
		cloud_up
	fi
	wait "${PID[crashbench]}" || die "bench during the $who crash (see $f.log)"
	unset "PID[crashbench]"
	if [[ $who == ferry ]]; then ferry_down; else medge_down; fi
	f=$f.json
	printf -v "E_${who}_${how}" '%s' "$(jnum lost "$f") lost of $(jnum acked "$f") acked ($(jnum duplicated "$f") dup, $(jnum unacked_received "$f") unacked but delivered, $(jnum reconnects "$f") reconnects)"
	log "e. $who, SIGKILL $how: $(jnum lost "$f") lost of $(jnum acked "$f") acked"
}
for how in live outage; do
	crash ferry "$how"
	crash mosquitto "$how"
done
cloud_down

# --- report ------------------------------------------------------------------

row() { printf '%-4s %-44s %-28s %s\n' "$@"; }
target() { printf '  %-42s %-12s %s\n' "$@"; }
verdict() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == ">=" ? v >= t : v <= t); print (ok ? "met" : "NOT met") }'; }
mA=$(median "${A_RATE[@]}") mB1=$(median "${B1_RATE[@]}") mB50=$(median "${B50_RATE[@]}") mHWM=$(median "${A_HWM[@]}")
lostF=$(($(jnum lost "$WORK/e-ferry-live.json") + $(jnum lost "$WORK/e-ferry-outage.json")))
{
	echo
	echo "ferry spine benchmark, $(date -u '+%F %H:%M') UTC; $("$FERRY" version 2>/dev/null | head -n1 || true) (checkout $(git describe --always --dirty 2>/dev/null || echo "not a git checkout")); $("$MOSQ" -h 2>&1 | head -n1)"
	echo "machine: $(nproc) CPUs ($CPU_MODEL); load average at the end $(cut -d' ' -f1-3 /proc/loadavg); took $(($(date +%s) - T0)) s"
	echo "medians of $RUNS runs (each run is logged above); load: ferry bench ${BENCH[*]}"
	echo
	row "" "" "ferry (sync, uplink on)" "Mosquitto edge -> bridge"
	row a/d "ingest, msgs/s acked" "$mA" "$(median "${M_RATE[@]}")"
	row "" "PUBACK p50 / p99, ms" "$(median "${A_P50[@]}") / $(median "${A_P99[@]}")" "$(median "${M_P50[@]}") / $(median "${M_P99[@]}")"
	row "" "peak RSS (VmHWM) after the run, MB" "$mHWM" "$(median "${M_HWM[@]}")"
	row "" "CPU, % of one core: broker / bench" "$(median "${A_CPU[@]}") / $(median "${A_BCPU[@]}")" "$(median "${M_CPU[@]}") / $(median "${M_BCPU[@]}")"
	row "" "ferry commits per run; average commit" "${A_COMMITS[*]}; ${A_COMMIT_AVG[*]}"
	row b/d "drain of $FILLED, events/s: to backlog 0" "$mB1" "-"
	row "" "  to the last cloud arrival" "$(median "${B1_SUB[@]}")" "$(median "${MD_RATE[@]}") (arrived: ${MD_GOT[*]})"
	row "" "  batch.max_events 50 (*): to backlog 0" "$mB50" ""
	row "" "  to the last cloud arrival" "$(median "${B50_SUB[@]}")" ""
	row c "idle, 1000 sensors: VmRSS after 10 s, MB" "$IDLE" "$MIDLE"
	row "" "  with no sensors, MB" "$IDLE0" "$MIDLE0"
	row "" "  ferry: anon / file MB, threads" "$IDLE_ANON / $IDLE_FILE, $IDLE_THREADS" ""
	row "" "  ferry: last GC (GODEBUG=gctrace=1)" "$IDLE_GC" ""
	echo "e    SIGKILL of the edge mid-stream, 20 publishers, QoS 1; lost = PUBACKed but never reached the cloud"
	echo "       ferry, cloud up:                $E_ferry_live"
	echo "       Mosquitto, cloud up:            $E_mosquitto_live"
	echo "       ferry, during a cloud outage:   $E_ferry_outage"
	echo "       Mosquitto, during an outage:    $E_mosquitto_outage"
	echo "(*) cloud topic {gateway_id}/{stream}: a batch holds events of one rendered topic, and with"
	echo "    {source} in it 50 interleaved publishers leave batches of about one event."
	echo
	echo "targets"
	target "durable ingest >= 50,000 events/s" "$mA" "$(verdict "$mA" 50000 '>=')"
	target "drain >= 30,000 events/s, batching off" "$mB1" "$(verdict "$mB1" 30000 '>=')"
	target "drain >= 30,000 events/s, batch 50 (*)" "$mB50" "$(verdict "$mB50" 30000 '>=')"
	target "peak RSS <= 40 MB under the ingest load" "$mHWM MB" "$(verdict "$mHWM" 40 '<=')"
	target "idle with 1,000 sensors <= 30 MB" "$IDLE MB" "$(verdict "$IDLE" 30 '<=')"
	target "no loss after SIGKILL (ferry)" "$lostF lost" "$(verdict "$lostF" 0 '<=')"
}
