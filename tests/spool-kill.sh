#!/bin/sh
# kill -9 of a worker in the middle of a job: after a restart the job is
# done, once, and nothing is left in running/.
. "$(dirname "$0")/spool-lib.sh"
setup

# A job long enough to be killed in the middle (the tiny model at 128x128).
job slow 'prompt: "a slow robot"
width: 128
height: 128
steps: 30
seed: 7'
start_worker a; wa=$worker_pid
second_step() { grep -q '"step":2,' "$SPOOL/logs/slow.jsonl" 2>/dev/null; }
check "the job is running (step 2 logged)" wait_for 120 second_step
kill -9 $wa
wait $wa 2>/dev/null
check "the killed worker left the job in running/ with its claim" \
    [ -f "$SPOOL/running/slow.yaml" -a -f "$SPOOL/running/slow.claim" ]
check "no PNG of the killed run is visible" \
    [ -z "$(ls "$SPOOL/output/slow" 2>/dev/null | grep '\.png$')" ]

# A restarted worker finds the dead claim (same host, pid gone), requeues
# the job and runs it.
"$BIN" watch --once --config "$CONF" "$SPOOL" 2> "$T/b.err"
rc=$?
check "the restarted worker (--once) exits 0 (got $rc)" [ $rc -eq 0 ]
check "the job is done" in_state slow done
check "its record says done" [ "$(json_field "$SPOOL/done/slow.json" status)" = done ]
check "its PNG is complete (sha256 as recorded)" images_ok "$SPOOL/done/slow.json"
check "exactly one PNG" [ "$(ls "$SPOOL/output/slow" | grep -c '\.png$')" -eq 1 ]
check "the log: claimed twice, requeued once (stale claim), done once" \
    [ "$(events slow claimed)" -eq 2 -a "$(events slow requeued)" -eq 1 -a "$(events slow done)" -eq 1 ]
check "the requeue names the dead worker" grep -q "is gone" "$SPOOL/logs/slow.jsonl"
check "nothing is left in running/" [ -z "$(ls -A "$SPOOL/running")" ]
check "nothing in incoming/ or failed/" [ -z "$(ls -A "$SPOOL/incoming" "$SPOOL/failed" | grep -v ':$' | grep -v '^$')" ]
check "no temporary file is left in the output folder" \
    [ -z "$(find "$SPOOL/output" -name '.*')" ]

# A claim of another host whose heartbeat stopped is taken over too.
mkdir -p "$SPOOL/running"
printf 'prompt: "from a dead node"\nseed: 3\n' > "$SPOOL/running/remote.yaml"
printf '{"host": "node-that-died", "pid": 4242, "nonce": "x"}\n' > "$SPOOL/running/remote.claim"
touch -d '1 hour ago' "$SPOOL/running/remote.claim"
"$BIN" watch --once --config "$CONF" "$SPOOL" 2> "$T/c.err"
check "a dead node's job (old heartbeat) is requeued and done" in_state remote done
check "the requeue says why" grep -q "no heartbeat from node-that-died" "$SPOOL/logs/remote.jsonl"

# A live claim of another host (fresh heartbeat) is left alone.
printf 'prompt: "busy elsewhere"\n' > "$SPOOL/running/busy.yaml"
printf '{"host": "node-alive", "pid": 4242, "nonce": "y"}\n' > "$SPOOL/running/busy.claim"
"$BIN" watch --once --config "$CONF" "$SPOOL" 2> "$T/d.err"
check "a fresh claim of another host stays in running/" \
    [ -f "$SPOOL/running/busy.yaml" -a -f "$SPOOL/running/busy.claim" ]
finish
