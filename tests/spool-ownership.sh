#!/bin/sh
# Never run a job twice, never lose one (issue 15, items 1, 2, 4, 5):
# a paused worker stands down when another took its claim over; workers in
# different PID namespaces with one host name judge each other by the
# heartbeat, not by pids; a requeue never replaces a newer queued job;
# worker deaths are counted and a crash-looping job goes to failed/.
. "$(dirname "$0")/spool-lib.sh"
setup
[ -x "$HOOKD" ] || skip_all "tests/hookd is not built"

# A PID namespace of its own for a worker (root, or a user namespace).
NS=
if unshare --pid --fork --kill-child true 2>/dev/null; then
	NS="unshare --pid --fork --kill-child"
elif unshare -U -r --pid --fork --kill-child true 2>/dev/null; then
	NS="unshare -U -r --pid --fork --kill-child"
fi
# start_ns_worker NAME: a worker in its own PID namespace; $ns_pid is the
# worker as this namespace sees it.
start_ns_worker() {
	$NS "$BIN" watch --config "$CONF" -v "$SPOOL" 2> "$T/$1.err" &
	_u=$!
	pids="$pids $_u"
	ns_pid=
	_kids() { ns_pid=$(cat /proc/$_u/task/$_u/children 2>/dev/null | tr -d ' '); [ -n "$ns_pid" ]; }
	wait_for 20 _kids
	pids="$pids $ns_pid"
}
stepped() { grep -q "\"step\":$2," "$SPOOL/logs/$1.jsonl" 2>/dev/null; }
receiver() {
	hdir=$T/hook-$1
	mkdir -p "$hdir"
	"$HOOKD" -p "$hdir/port" -d "$hdir" -m "$2" -t 600 &
	pids="$pids $!"
	hookd_pid=$!
	wait_for 30 test -s "$hdir/port" || { not_ok "hookd $1 did not start"; return 1; }
	url="http://127.0.0.1:$(cat "$hdir/port")/hook"
}
requests() { _n=$(grep -c "${1:-^n=}" "$hdir/requests.log" 2>/dev/null); echo "${_n:-0}"; }
SLOW='width: 128
height: 128
steps: 60'
jobs=0; kills=0; dups=0; losses=0
tally() {	# tally ID: count a job that must be done once, with its PNG
	jobs=$((jobs + 1))
	[ "$(events "$1" done)" -gt 1 ] && dups=$((dups + 1))
	in_state "$1" done || losses=$((losses + 1))
}

if [ -z "$NS" ]; then
	ok "# SKIP no PID namespaces here (unshare): the paused worker and namespace cases"
else
	# 1. A paused worker (SIGSTOP past stale_after) in another PID
	# namespace; a second worker takes the job over; SIGCONT: the first
	# must stand down: one done, one callback, the new claim untouched.
	receiver p ok
	job p1 "prompt: \"paused\"
seed: 21
$SLOW
callback: { url: \"$url\" }"
	start_ns_worker a; wa=$ns_pid
	check "worker a (own PID namespace) runs p1" wait_for 120 stepped p1 2
	kill -STOP $wa; kills=$((kills + 1))
	start_worker b; wb=$worker_pid
	two_claims() { [ "$(events p1 claimed)" -ge 2 ]; }
	check "after stale_after, worker b takes p1 over" wait_for 60 two_claims
	check "the takeover says why (heartbeat, another namespace)" \
	    grep -q "another boot or PID namespace" "$SPOOL/logs/p1.jsonl"
	b_runs() { [ "$(grep -c '"event":"step"' "$SPOOL/logs/p1.jsonl")" -ge 6 ]; }
	wait_for 60 b_runs
	kill -CONT $wa
	check "the resumed worker stands down" wait_for 60 grep -q "standing down" "$T/a.err"
	check "p1 is done" wait_for 120 in_state p1 done
	delivered() { [ "$(requests 'event=job.done')" -ge 1 ]; }
	check "its callback comes" wait_for 60 delivered
	check "the record's PNG matches its sha256" images_ok "$SPOOL/done/p1.json"
	check "done once in the log ($(events p1 done))" [ "$(events p1 done)" -eq 1 ]
	check "one job.done callback ($(requests 'event=job.done'))" [ "$(requests 'event=job.done')" -eq 1 ]
	check "the record names worker b" grep -q "\"pid\": $wb" "$SPOOL/done/p1.json"
	check "nothing is left in running/" [ -z "$(ls -A "$SPOOL/running")" ]
	tally p1
	kill -TERM $wa $wb 2>/dev/null
	wait $wb 2>/dev/null

	# 2. Two workers in two PID namespaces with one host name, four jobs:
	# each job claimed once (the pids mean nothing across namespaces).
	i=1
	while [ $i -le 4 ]; do
		job "ns$i" "prompt: \"namespace $i\"
seed: $i
steps: 8"
		i=$((i + 1))
	done
	start_ns_worker c; wc=$ns_pid
	start_ns_worker d; wd=$ns_pid
	ns_done() { [ "$(count_files "$SPOOL/done" '^ns.*\.yaml$')" -eq 4 ]; }
	check "four jobs done by two namespaced workers" wait_for 180 ns_done
	once=0
	for i in 1 2 3 4; do
		[ "$(events "ns$i" claimed)" -eq 1 ] && once=$((once + 1))
		tally "ns$i"
	done
	check "each claimed exactly once ($once/4), no requeue" \
	    [ $once -eq 4 -a "$(cat "$SPOOL"/logs/ns*.jsonl | grep -c '"event":"requeued"')" -eq 0 ]
	kill -TERM $wc $wd 2>/dev/null
	sleep 0.5
	kill $hookd_pid
fi

# 4. A requeue (SIGTERM) never replaces a newer job queued under the id.
job r1 "prompt: \"old r1\"
seed: 4
$SLOW"
start_worker e; we=$worker_pid
check "r1 runs" wait_for 120 stepped r1 2
job r1 'prompt: "newer r1"'
kill -TERM $we
wait $we
check "the newer r1 is still queued" grep -q "newer r1" "$SPOOL/incoming/r1.yaml"
check "the old one went to failed/ with the reason" \
    grep -q "newer job r1 was queued" "$SPOOL/failed/r1.json"
check "and its job file is the old one" grep -q "old r1" "$SPOOL/failed/r1.yaml"
rm -f "$SPOOL/incoming/r1.yaml"

# 5. A crash loop: kill -9 twice on one job, then it is failed with the
# reason instead of being run a third time.
job k1 "prompt: \"crash loop\"
seed: 5
$SLOW"
start_worker f; wf=$worker_pid
check "k1 runs" wait_for 120 stepped k1 2
kill -9 $wf; wait $wf 2>/dev/null; kills=$((kills + 1))
start_worker g; wg=$worker_pid
second_run() { [ "$(events k1 claimed)" -ge 2 ] && [ "$(grep -c '"event":"step"' "$SPOOL/logs/k1.jsonl")" -ge 4 ]; }
check "k1 is requeued and runs again" wait_for 120 second_run
check "the second claim counts the first death" grep -q '"deaths":1' "$SPOOL/running/k1.claim"
kill -9 $wg; wait $wg 2>/dev/null; kills=$((kills + 1))
"$BIN" watch --once --config "$CONF" "$SPOOL" 2> "$T/h.err"
check "after the second death k1 is failed, not run again" in_state k1 failed
check "its record says why" grep -q "died 2 times" "$SPOOL/failed/k1.json"
check "it was claimed twice only" [ "$(events k1 claimed)" -eq 2 ]

diag "jobs $jobs, kills/pauses $kills, duplicates $dups, losses $losses"
check "no job ran twice, none was lost" [ $dups -eq 0 -a $losses -eq 0 ]
finish
