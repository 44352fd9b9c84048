#!/bin/sh
# sdbatch cancel: a queued job goes to failed/ at once; a running one stops
# at its next step and goes to failed/ as cancelled; the worker goes on.
. "$(dirname "$0")/spool-lib.sh"
setup

# A queued job (no worker yet; submit makes the folders of an existing spool).
mkdir -p "$SPOOL"
printf 'prompt: "never run"\n' | "$BIN" submit --config "$CONF" --id q1 "$SPOOL" - > "$T/submit.out"
check "submit prints the id" grep -qx q1 "$T/submit.out"
"$BIN" cancel "$SPOOL" q1 > "$T/cancel.out"; rc=$?
check "cancel of a queued job exits 0 (got $rc)" [ $rc -eq 0 ]
check "and says so" grep -q "q1: cancelled (it was queued)" "$T/cancel.out"
check "the job is in failed/" in_state q1 failed
check "its record says cancelled" [ "$(json_field "$SPOOL/failed/q1.json" status)" = cancelled ]
check "the log says cancelled" has_event q1 cancelled
check "no worker ran it: worker null, not the cancel command's pid" \
    grep -q '"worker": null' "$SPOOL/failed/q1.json"
check "and no exit code in its error" no grep -q '"code"' "$SPOOL/failed/q1.json"
"$BIN" status "$SPOOL" q1 > "$T/status.out"
check "status shows it cancelled" grep -q "^q1 .*cancelled" "$T/status.out"

# A running job.
job r1 'prompt: "cancel me"
width: 128
height: 128
steps: 30'
start_worker a; wa=$worker_pid
step2() { grep -q '"step":2,' "$SPOOL/logs/r1.jsonl" 2>/dev/null; }
check "the job is running" wait_for 120 step2
"$BIN" status "$SPOOL" > "$T/status2.out"
check "status shows it running, with its step and worker" \
    grep -q "^r1 .*running .*image 1/1 step [0-9]*/30 .* on .* pid $wa" "$T/status2.out"
"$BIN" status --json "$SPOOL" r1 > "$T/status3.json"
check "status --json: state, worker and last progress event" \
    grep -q '"state": "running"' "$T/status3.json"
"$BIN" cancel --wait --timeout 120 "$SPOOL" r1 > "$T/cancel2.out"; rc=$?
check "cancel --wait of a running job exits 0 (got $rc)" [ $rc -eq 0 ]
check "it said the request" grep -q "r1: cancel requested" "$T/cancel2.out"
check "the job is in failed/" in_state r1 failed
check "its record says cancelled" [ "$(json_field "$SPOOL/failed/r1.json" status)" = cancelled ]
steps=$(grep -c '"event":"step"' "$SPOOL/logs/r1.jsonl")
check "it stopped early ($steps of 30 steps)" [ "$steps" -lt 30 ]
check "no PNG was written" [ -z "$(ls "$SPOOL/output/r1" 2>/dev/null | grep '\.png$')" ]
check "no request or claim is left in running/" [ -z "$(ls -A "$SPOOL/running")" ]
check "the worker is still running" alive $wa
job after 'prompt: "next one"'
check "and runs the next job" wait_for 60 in_state after done

"$BIN" cancel "$SPOOL" nosuch 2> "$T/e1"; rc=$?
check "cancel of an unknown job exits 66 (got $rc)" [ $rc -eq 66 ]
"$BIN" cancel "$SPOOL" after 2> "$T/e2"; rc=$?
check "cancel of a finished job exits 65 (got $rc)" [ $rc -eq 65 ]
check "and says it has finished" grep -q "finished already" "$T/e2"
"$BIN" cancel "$SPOOL" 2> /dev/null; rc=$?
check "cancel without an id is a usage error (got $rc)" [ $rc -eq 64 ]
kill -TERM $wa; wait $wa

# sdbatch retry (issue 15): a failed or cancelled job runs again under its
# id; its old record is kept as history.
"$BIN" retry "$SPOOL" q1 > "$T/retry.out"; rc=$?
check "retry of a cancelled job exits 0 (got $rc)" [ $rc -eq 0 ]
check "it is queued again" in_state q1 incoming
check "its old record is kept in failed/.history/" \
    [ -n "$(ls "$SPOOL/failed/.history/" 2>/dev/null | grep '^q1-.*\.json$')" ]
"$BIN" watch --once --config "$CONF" "$SPOOL" 2> "$T/retry.err"
check "and it runs" in_state q1 done
check "the history survives the new run" \
    [ -n "$(ls "$SPOOL/failed/.history/" 2>/dev/null | grep '^q1-.*\.json$')" ]
"$BIN" retry "$SPOOL" q1 2> "$T/e3"; rc=$?
check "retry of a done job exits 65 (got $rc)" [ $rc -eq 65 ]
"$BIN" status "$SPOOL" q1 --json > "$T/perm.json" 2> "$T/perm.err"; rc=$?
check "status SPOOL ID --json (options after operands, GNU style; rc $rc)" \
    grep -q '"state": "done"' "$T/perm.json"
"$BIN" retry "$SPOOL" nosuch 2> "$T/e4"; rc=$?
check "retry of an unknown job exits 66 (got $rc)" [ $rc -eq 66 ]
finish
