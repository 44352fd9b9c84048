#!/bin/sh
# Three workers on one spool, 30 jobs: every job runs exactly once and its
# outputs are complete.
. "$(dirname "$0")/spool-lib.sh"
setup

N=30
# Some jobs are queued before the workers start, the rest while they run.
i=1
while [ $i -le 10 ]; do
	job "w$i" "prompt: \"job $i\"
seed: $i
count: $(( i % 3 == 0 ? 2 : 1 ))"
	i=$((i + 1))
done
start_worker a; wa=$worker_pid
start_worker b; wb=$worker_pid
start_worker c; wc=$worker_pid
while [ $i -le $N ]; do
	if [ $((i % 2)) -eq 0 ]; then
		printf 'prompt: "job %d"\nseed: %d\ncount: %d\n' $i $i $(( i % 3 == 0 ? 2 : 1 )) |
		    "$BIN" submit --config "$CONF" --id "w$i" "$SPOOL" - > /dev/null
	else
		job "w$i" "prompt: \"job $i\"
seed: $i
count: $(( i % 3 == 0 ? 2 : 1 ))"
	fi
	i=$((i + 1))
done

all_done() { [ "$(count_files "$SPOOL/done" '\.yaml$')" -eq $N ]; }
check "all $N jobs reach done/" wait_for 240 all_done
kill -TERM $wa $wb $wc
rc=0
for p in $wa $wb $wc; do
	wait $p; r=$?
	[ $r -eq 0 ] || rc=$r
done
check "idle workers exit 0 on SIGTERM (got $rc)" [ $rc -eq 0 ]

once=0; recs=0; imgs=0; total_imgs=0
i=1
while [ $i -le $N ]; do
	[ "$(events "w$i" claimed)" -eq 1 ] && [ "$(events "w$i" done)" -eq 1 ] &&
	    once=$((once + 1))
	rec=$SPOOL/done/w$i.json
	[ "$(json_field "$rec" status)" = done ] && recs=$((recs + 1))
	images_ok "$rec" && imgs=$((imgs + 1))
	want=$(( i % 3 == 0 ? 2 : 1 ))
	have=$(ls "$SPOOL/output/w$i" | grep -c '\.png$')
	[ "$have" -eq "$want" ] && total_imgs=$((total_imgs + 1))
	i=$((i + 1))
done
check "every job claimed once and done once ($once/$N)" [ $once -eq $N ]
check "every record says done ($recs/$N)" [ $recs -eq $N ]
check "every PNG is complete: sha256 of the file = the record's ($imgs/$N)" [ $imgs -eq $N ]
check "every job has its count of PNGs ($total_imgs/$N)" [ $total_imgs -eq $N ]
check "running/, incoming/ and failed/ are empty" \
    [ -z "$(ls -A "$SPOOL/running" "$SPOOL/incoming" "$SPOOL/failed" 2>/dev/null | grep -v ':$' | grep -v '^$')" ]
check "no temporary files are left" [ -z "$(find "$SPOOL" -name '.*' -type f)" ]
loads=$(cat "$SPOOL"/logs/*.jsonl | grep -c '"event":"loading"')
check "each worker loaded the model once and kept it ($loads loads)" [ "$loads" -le 3 ]
workers=$(grep -h '"pid"' "$SPOOL"/done/*.json | sort -u | wc -l)
diag "jobs were run by $workers worker processes"
finish
