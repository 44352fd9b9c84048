#!/bin/sh
# SIGTERM mid-job: requeued, exit 75, finished by the next worker.  A second
# signal exits at once.  SIGHUP reloads the configuration.  SIGINT stops
# `sdbatch run` with 75.
. "$(dirname "$0")/spool-lib.sh"
setup

SLOW='width: 128
height: 128
steps: 30'
running_step() { grep -q "\"step\":$2," "$SPOOL/logs/$1.jsonl" 2>/dev/null; }

# An idle worker: SIGTERM is a plain stop.
start_worker idle; w=$worker_pid
check "an idle worker starts" wait_for 30 test -d "$SPOOL/running"
kill -TERM $w
wait $w; rc=$?
check "an idle worker exits 0 on SIGTERM (got $rc)" [ $rc -eq 0 ]

# SIGTERM during a job.
job t1 "prompt: \"stop me\"
seed: 11
$SLOW"
start_worker a; wa=$worker_pid
check "the job is running" wait_for 120 running_step t1 2
kill -TERM $wa
wait $wa; rc=$?
check "the worker exits 75 on SIGTERM mid-job (got $rc)" [ $rc -eq 75 ]
check "the job is back in incoming/" in_state t1 incoming
check "no claim is left" [ ! -e "$SPOOL/running/t1.claim" -a ! -e "$SPOOL/running/t1.yaml" ]
check "the log says requeued" has_event t1 requeued
steps=$(grep -c '"event":"step"' "$SPOOL/logs/t1.jsonl")
check "it stopped at the next step, not at the end ($steps of 30 steps)" [ "$steps" -lt 30 ]
"$BIN" watch --once --config "$CONF" "$SPOOL" 2> "$T/b.err"; rc=$?
check "the next worker finishes it (exit $rc)" [ $rc -eq 0 ]
check "it is done, with a complete PNG" images_ok "$SPOOL/done/t1.json"
check "done once" [ "$(events t1 done)" -eq 1 ]

# Two signals: the second exits at once, and the job is requeued all the same.
job t2 "prompt: \"stop me now\"
seed: 12
$SLOW"
start_worker c; wc=$worker_pid
check "the second job is running" wait_for 120 running_step t2 2
kill -INT $wc; kill -INT $wc
wait $wc; rc=$?
check "two SIGINTs: exit 75 (got $rc)" [ $rc -eq 75 ]
check "the job is back in incoming/" in_state t2 incoming
check "no claim is left" [ ! -e "$SPOOL/running/t2.claim" ]
"$BIN" watch --once --config "$CONF" "$SPOOL" 2> "$T/d.err"
check "and is done by the next worker" in_state t2 done

# SIGHUP: a new default from the configuration applies to the next job.
start_worker e; we=$worker_pid
job h1 'prompt: "before"'
check "a job before the reload is done" wait_for 60 in_state h1 done
DEFAULTS='{ width: 64, height: 64, steps: 3 }' write_conf
kill -HUP $we
reloaded() { grep -q "configuration reloaded" "$T/e.err"; }
check "SIGHUP reloads the configuration" wait_for 30 reloaded
job h2 'prompt: "after"'
check "a job after the reload is done" wait_for 60 in_state h2 done
check "with the new default steps" grep -q '"steps": 3' "$SPOOL/done/h2.json"
printf 'limits: [\n' >> "$CONF"
kill -HUP $we
kept() { grep -q "configuration not reloaded" "$T/e.err"; }
check "a broken configuration is refused and the old one kept" wait_for 30 kept
job h3 'prompt: "still working"'
check "the worker still works" wait_for 60 in_state h3 done
kill -TERM $we; wait $we

# sdbatch run: SIGINT mid-job exits 75 and leaves no partial PNG.
write_conf
"$BIN" run --config "$CONF" --progress json -p "interrupt me" -W 128 -H 128 -s 30 \
    -o "$T/run.png" 2> "$T/run.err" > "$T/run.out" &
rp=$!
pids="$pids $rp"
run_step() { grep -q '"step":2,' "$T/run.err"; }
check "run is rendering" wait_for 120 run_step
kill -INT $rp
wait $rp; rc=$?
check "run exits 75 on SIGINT (got $rc)" [ $rc -eq 75 ]
check "and wrote no PNG" [ ! -e "$T/run.png" -a -z "$(find "$T" -maxdepth 1 -name '.run.png*')" ]
finish
