#!/bin/sh
# The end of a job (issue 15, items 3, 6, 7, 8): a record that cannot be
# written (a full disk) never leaves the job claimed and sends no
# callback; owed callbacks survive a SIGTERM, never hold up rendering, keep
# one webhook-id across a crash and take any 2xx as delivered; jobs naming
# the same output file never overwrite each other; leftovers of a killed
# write are cleaned; files respect the umask.
. "$(dirname "$0")/spool-lib.sh"
setup
[ -x "$HOOKD" ] || skip_all "tests/hookd is not built"

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
stepped() { grep -q "\"step\":$2," "$SPOOL/logs/$1.jsonl" 2>/dev/null; }
run_once() { "$BIN" watch --once --config "$CONF" "$SPOOL" 2>> "$T/once.err"; }
faults=0

# 3. A full disk where the records go (a 64 KiB tmpfs over done/, filled,
# in a mount namespace of the worker's own): the job is requeued, then
# failed with the reason, never left in running/; no job.done is sent.
receiver full ok
job d1 "prompt: \"no room\"
callback: { url: \"$url\" }"
if unshare --mount true 2>/dev/null; then
	MNT="unshare --mount"
elif unshare -U -r --mount true 2>/dev/null; then
	MNT="unshare -U -r --mount"
else
	MNT=
fi
if [ -n "$MNT" ] && $MNT sh -c 'mount -t tmpfs -o size=64k tmpfs "$1"' sh "$T" 2>/dev/null; then
	mkdir -p "$SPOOL/done"
	$MNT sh -c 'mount -t tmpfs -o size=64k tmpfs "$1/done" || exit 1
	    dd if=/dev/zero of="$1/done/.fill" bs=4096 2>/dev/null
	    exec "$2" watch --once --config "$3" "$1"' sh "$SPOOL" "$BIN" "$CONF" 2> "$T/full.err"
	faults=$((faults + 2))
	check "d1 is not left in running/" [ -z "$(ls -A "$SPOOL/running")" ]
	check "it went to failed/ after two tries" in_state d1 failed
	check "its record says the record could not be written (disk full)" \
	    grep -q "could not be written.*No space left" "$SPOOL/failed/d1.json"
	check "the log has the requeue in between" has_event d1 requeued
	check "the worker did not say done" no grep -q "job d1 done" "$T/full.err"
	check "no job.done callback was sent ($(requests event=job.done))" \
	    [ "$(requests event=job.done)" -eq 0 ]
else
	ok "# SKIP no mount namespace with tmpfs here: the full-disk case"
fi
kill $hookd_pid

# 6a. SIGTERM between a failed attempt and its retry: the callback stays
# owed in the spool and the next worker delivers it, with the same
# webhook-id; the worker is not held up by the backoff.
write_conf 'callback: { attempts: 4, timeout: 5, total_time: 120, backoff: 4, backoff_max: 4 }'
sed -i '/^callback: { attempts: 3/d' "$CONF"
receiver flaky fail:1
job c1 "prompt: \"call me later\"
callback: { url: \"$url\" }"
start_worker a; wa=$worker_pid
first() { [ "$(requests)" -ge 1 ]; }
check "the first attempt gets its 500" wait_for 120 first
kill -TERM $wa
t0=$(date +%s)
wait $wa; rc=$?
check "the worker exits 0 at once on SIGTERM (rc $rc, $(( $(date +%s) - t0 )) s)" \
    [ $rc -eq 0 -a $(( $(date +%s) - t0 )) -le 2 ]
check "the callback is still owed in the spool" test -f "$SPOOL/callbacks/c1.json"
run_once
check "the next worker delivered it" [ "$(requests 'answer=200')" -eq 1 ]
ids=$(sed -n 's/.* id=\([^ ]*\) .*/\1/p' "$hdir/requests.log" | sort -u | wc -l)
check "both attempts with one webhook-id" [ "$ids" -eq 1 ]
check "the record: delivered, 2 attempts" grep -q '"attempts": 2,' "$SPOOL/done/c1.json"
check "nothing is owed any more" [ -z "$(ls -A "$SPOOL/callbacks")" ]
kill $hookd_pid
write_conf

# 6b. A receiver that never answers holds up no rendering.
write_conf 'callback: { attempts: 3, timeout: 10, total_time: 60, backoff: 0.1, backoff_max: 0.5 }'
sed -i '/^callback: { attempts: 3, timeout: 1/d' "$CONF"
receiver dead hang
job h1 "prompt: \"hang 1\"
callback: { url: \"$url\" }"
job h2 "prompt: \"hang 2\"
callback: { url: \"$url\" }"
start_worker b; wb=$worker_pid
both() { in_state h1 done && in_state h2 done; }
t0=$(date +%s)
check "both jobs are done while the first callback hangs" wait_for 25 both
diag "in $(( $(date +%s) - t0 )) s (one attempt may take 10 s)"
kill -TERM $wb; wait $wb
kill $hookd_pid
write_conf

# 6c. A 2xx with a body over 1 MiB is a delivery.
receiver big big
job b1 "prompt: \"big answer\"
callback: { url: \"$url\" }"
run_once
check "one request" [ "$(requests)" -eq 1 ]
cb_delivered() { grep -A1 '"callback"' "$1" | grep -q '"status": "delivered"'; }
check "recorded as delivered" cb_delivered "$SPOOL/done/b1.json"
kill $hookd_pid

# 6d. The webhook-id is fixed per job and event, also when the job is rerun
# after its worker was killed.
receiver crash ok
job w1 "prompt: \"killed once\"
width: 128
height: 128
steps: 40
callback: { url: \"$url\" }"
start_worker c; wc=$worker_pid
check "w1 runs" wait_for 120 stepped w1 2
inst=$(sed -n 's/.*"instance":"\([0-9a-f]*\)".*/\1/p' "$SPOOL/running/w1.claim")
kill -9 $wc; wait $wc 2>/dev/null
faults=$((faults + 1))
run_once
want=msg_$(printf '%s %s' "$inst" job.done | sha256sum | cut -c1-32)
check "w1 is done after the rerun" in_state w1 done
check "its webhook-id is the first run's ($want)" grep -q "id=$want " "$hdir/requests.log"
kill $hookd_pid

# 7. Two jobs naming one output file: both kept, each record's sha256
# matches its own file; a killed write's leftover is cleaned.
mkdir -p "$SPOOL/output/shared"
echo junk > "$SPOOL/output/shared/.same.png.o2.0123456789ab.tmp"
job o1 'prompt: "first"
seed: 1
output: { dir: shared, name: same.png }'
job o2 'prompt: "second"
seed: 2
output: { dir: shared, name: same.png }'
run_once
check "both are done" [ -f "$SPOOL/done/o1.json" -a -f "$SPOOL/done/o2.json" ]
check "o1's record matches its file" images_ok "$SPOOL/done/o1.json"
check "o2's record matches its file" images_ok "$SPOOL/done/o2.json"
p1=$(sed -n 's/^ *"path": "\(.*\.png\)",$/\1/p' "$SPOOL/done/o1.json")
p2=$(sed -n 's/^ *"path": "\(.*\.png\)",$/\1/p' "$SPOOL/done/o2.json")
check "two files ($p1, $p2)" [ -n "$p1" -a -n "$p2" -a "$p1" != "$p2" ]
check "the killed write's leftover is gone" [ ! -e "$SPOOL/output/shared/.same.png.o2.0123456789ab.tmp" ]

# 8. Records, claims and PNGs respect the umask.
job u1 'prompt: "private"'
(umask 077; "$BIN" watch --once --config "$CONF" "$SPOOL" 2>> "$T/once.err")
png=$(sed -n 's/^ *"path": "\(.*\.png\)",$/\1/p' "$SPOOL/done/u1.json")
check "umask 077: the record is 600 ($(stat -c %a "$SPOOL/done/u1.json"))" \
    [ "$(stat -c %a "$SPOOL/done/u1.json")" = 600 ]
check "umask 077: the PNG is 600" [ "$(stat -c %a "$png")" = 600 ]
check "no temporary file is left anywhere" [ -z "$(find "$SPOOL" -name '*.tmp')" ]
# 11. A FIFO as the model fails the job at once (it blocked the worker
# for ever); a job over the configured time limit is stopped and failed.
mkfifo "$T/model.fifo"
job fifo "prompt: \"a fifo\"
model: $T/model.fifo"
timeout 60 "$BIN" watch --once --config "$CONF" "$SPOOL" 2>> "$T/once.err"; rc=$?
check "the worker is not blocked by a FIFO (rc $rc)" [ $rc -ne 124 ]
check "the job failed: not a regular file" grep -q "not a regular file" "$SPOOL/failed/fifo.json"
write_conf 'job_time_limit: 1'
job long 'prompt: "too long"
width: 128
height: 128
steps: 150'
timeout 120 "$BIN" watch --once --config "$CONF" "$SPOOL" 2>> "$T/once.err"
check "a job over job_time_limit is failed" grep -q "over the job time limit" "$SPOOL/failed/long.json"
check "stopped early ($(grep -c '"event":"step"' "$SPOOL/logs/long.jsonl") of 150 steps)" \
    [ "$(grep -c '"event":"step"' "$SPOOL/logs/long.jsonl")" -lt 150 ]
write_conf
diag "faults injected: $faults"
finish
