#!/bin/sh
# `watch --once` (cron, Slurm): its exit status says whether a job failed.
# 0 when every job it ran is done (or cancelled), the failed job's status
# when one failed (65 bad job data, 66 a missing input), also when a later
# job was interrupted (75 otherwise); `watch` without --once keeps 0.
. "$(dirname "$0")/spool-lib.sh"
setup

SLOW='width: 128
height: 128
steps: 40'
# running_step ID N: the job runs, and its current run has reached step N.
running_step() {
	awk '/"event":"(claimed|requeued|done|failed|cancelled)"/ { s = 0 } /"event":"step"/ && index($0, "\"step\":'"$2"',") { s = 1 }
	    END { exit !s }' "$SPOOL/logs/$1.jsonl" 2>/dev/null
}
once() { "$BIN" watch --once --config "$CONF" "$SPOOL" 2> "$T/$1.err"; }
# touch_later ID SECONDS: make a queued job newer, so that jobs are claimed in
# the order the test wants (oldest first).
touch_later() { touch -d "@$(( $(date +%s) + $2 ))" "$SPOOL/incoming/$1.yaml"; }

job ok1 'prompt: "fine"'
once ok; rc=$?
check "every job done: exit 0 (got $rc)" [ $rc -eq 0 ]
check "and no failure is reported" no grep -q "failed" "$T/ok.err"

# A bad job file and a good one: the good one is done all the same.
job bad1 'prompt: "broken"
width: [1, 2'
job ok2 'prompt: "fine too"'
touch_later ok2 5
once bad; rc=$?
check "a job with bad data failed: exit 65 (got $rc)" [ $rc -eq 65 ]
check "the bad job is in failed/" in_state bad1 failed
check "the good job after it is done" in_state ok2 done
check "stderr says how many jobs failed" grep -q "1 job failed" "$T/bad.err"

# A job whose model file is missing: the status of a missing input.
job missing1 "prompt: \"no model\"
model: $T/no-such-model.safetensors"
once missing; rc=$?
check "a job with a missing model failed: exit 66 (got $rc)" [ $rc -eq 66 ]
check "it is in failed/" in_state missing1 failed

# Two failures: the first one's status.
job bad2 'prompt: [unclosed'
job missing2 "prompt: \"no model\"
model: $T/no-such-model.safetensors"
touch_later missing2 5
once two; rc=$?
check "two failed jobs: the first one's status, 65 (got $rc)" [ $rc -eq 65 ]
check "stderr says 2 jobs failed" grep -q "2 jobs failed" "$T/two.err"

# A failed job, then SIGTERM during the next job: the failure wins over 75,
# and the interrupted job is back in incoming/.
job bad3 'prompt: "broken"
steps: many'
job slow1 "prompt: \"slow\"
seed: 3
$SLOW"
touch_later slow1 5
"$BIN" watch --once --config "$CONF" "$SPOOL" 2> "$T/term.err" &
w=$!
pids="$pids $w"
check "the slow job is running" wait_for 120 running_step slow1 2
kill -TERM $w
wait $w; rc=$?
check "a failed job, then an interrupted one: exit 65 (got $rc)" [ $rc -eq 65 ]
check "the interrupted job is back in incoming/" in_state slow1 incoming
check "the failed job is in failed/" in_state bad3 failed

# An interrupted job alone: 75, as before.
start_worker int --once; w=$worker_pid
check "the slow job runs again" wait_for 120 running_step slow1 2
kill -TERM $w
wait $w; rc=$?
check "an interrupted job and no failure: exit 75 (got $rc)" [ $rc -eq 75 ]

# A job cancelled while it runs is not a failure of the worker.
start_worker cancel --once; w=$worker_pid
check "the slow job runs a third time" wait_for 120 running_step slow1 2
"$BIN" cancel "$SPOOL" slow1 > /dev/null 2>&1
wait $w; rc=$?
check "a cancelled job: exit 0 (got $rc)" [ $rc -eq 0 ]
check "the cancelled job is in failed/" in_state slow1 failed

# Without --once a failed job does not change the status at SIGTERM.
start_worker daemon; w=$worker_pid
job bad4 'prompt: "broken"
width: -1'
check "the daemon worker fails the job" wait_for 60 in_state bad4 failed
kill -TERM $w
wait $w; rc=$?
check "watch without --once still exits 0 on SIGTERM (got $rc)" [ $rc -eq 0 ]
finish
