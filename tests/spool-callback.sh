#!/bin/sh
# Callbacks: a receiver on 127.0.0.1 (tests/hookd) verifies the Standard
# Webhooks signature with its own code, and the body; retries keep the
# delivery id; a receiver that never answers is recorded as failed and the
# job is still done.
. "$(dirname "$0")/spool-lib.sh"
setup
[ -x "$HOOKD" ] || skip_all "tests/hookd is not built"

SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
HOOK_SECRET=$SECRET
export HOOK_SECRET

# receiver NAME MODE: start hookd; $url and $hdir set.
receiver() {
	hdir=$T/hook-$1
	mkdir -p "$hdir"
	"$HOOKD" -p "$hdir/port" -d "$hdir" -s "$SECRET" -m "$2" -t 300 &
	pids="$pids $!"
	hookd_pid=$!
	wait_for 30 test -s "$hdir/port" || { not_ok "hookd $1 did not start"; return 1; }
	url="http://127.0.0.1:$(cat "$hdir/port")/hook"
}
requests() { grep -c '^n=' "$hdir/requests.log" 2>/dev/null || echo 0; }
cbjob() {
	job "$1" "prompt: \"call me\"
seed: 5
${3:-}
callback: { url: \"$url\", secret_env: HOOK_SECRET, include_images: ${2:-false} }
metadata: { ticket: \"T-$1\" }"
}
run_once() { "$BIN" watch --once --config "$CONF" -v "$SPOOL" 2>> "$T/once.err"; }

# 1. A receiver that answers 200: one signed delivery with the images.
receiver ok ok
cbjob c1 true
run_once
check "c1 is done" in_state c1 done
check "one request" [ "$(requests)" -eq 1 ]
check "the receiver verified the signature with its own HMAC" grep -q 'sig=ok' "$hdir/requests.log"
check "headers: event job.done, JSON, webhook-id msg_..." \
    grep -q 'id=msg_[0-9a-f]* ts=[0-9]* event=job.done sig=ok type=application/json' "$hdir/requests.log"
body=$hdir/body-1.json
check "the body is the result record" grep -q '"id":"c1","status":"done"' "$body"
check "with the job's metadata" grep -q '"ticket":"T-c1"' "$body"
png=$(sed -n 's/.*"path":"\([^"]*\.png\)".*/\1/p' "$body")
sed -n 's/.*"png_base64":"\([^"]*\)".*/\1/p' "$body" | base64 -d > "$T/c1.png" 2>/dev/null
check "include_images: the PNG as base64 is the file" cmp -s "$T/c1.png" "$png"
rec=$SPOOL/done/c1.json
cb_status() { grep -A1 '"callback"' "$1" | grep -q "\"status\": \"$2\""; }
check "the record says delivered" cb_status "$rec" delivered
check "the record's callback attempts is 1" grep -q '"attempts": 1,' "$rec"
check "the secret is in no file of the spool" [ -z "$(grep -rl "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" "$SPOOL" "$T"/*.err 2>/dev/null)" ]
kill $hookd_pid

# 2. 500, 500, then 200: three attempts with the same delivery id.
receiver flaky fail:2
cbjob c2
run_once
check "c2 is done" in_state c2 done
check "three attempts" [ "$(requests)" -eq 3 ]
ids=$(sed -n 's/.* id=\([^ ]*\) .*/\1/p' "$hdir/requests.log" | sort -u | wc -l)
check "all with one webhook-id" [ "$ids" -eq 1 ]
check "each one signed (its own timestamp)" [ "$(grep -c 'sig=ok' "$hdir/requests.log")" -eq 3 ]
check "answers 500, 500, 200" [ "$(sed -n 's/.*answer=\([0-9]*\)$/\1/p' "$hdir/requests.log" | tr '\n' ' ')" = "500 500 200 " ]
check "the record: delivered after 3 attempts" grep -q '"attempts": 3,' "$SPOOL/done/c2.json"
check "the body has no images without include_images" no grep -q png_base64 "$hdir/body-1.json"
kill $hookd_pid

# 3. A receiver that never answers: failed callback, job still done.
receiver silent hang
write_conf 'callback: { attempts: 2, timeout: 0.5, total_time: 10, backoff: 0.1, backoff_max: 0.2 }'
sed -i '/^callback: { attempts: 3/d' "$CONF"
cbjob c3
run_once
check "c3 is done although its callback failed" in_state c3 done
check "its record: callback failed" cb_status "$SPOOL/done/c3.json" failed
check "after 2 attempts" grep -q '"attempts": 2,' "$SPOOL/done/c3.json"
check "with the timeout as last_error" grep -Eq '"last_error": ".*(timed out|[Tt]imeout)' "$SPOOL/done/c3.json"
check "the record's status stays done" [ "$(json_field "$SPOOL/done/c3.json" status)" = done ]
kill $hookd_pid
write_conf

# 4. 410 Gone: no retry.
receiver gone gone
cbjob c4
run_once
check "410: one attempt only" [ "$(requests)" -eq 1 ]
check "recorded as failed with the 410" grep -q '"last_error": "HTTP 410' "$SPOOL/done/c4.json"
kill $hookd_pid

# 5. Retry-After is honoured.
receiver later retry:2
cbjob c5
run_once
check "Retry-After: two attempts" [ "$(requests)" -eq 2 ]
t1=$(sed -n '1s/.* ts=\([0-9]*\) .*/\1/p' "$hdir/requests.log")
t2=$(sed -n '2s/.* ts=\([0-9]*\) .*/\1/p' "$hdir/requests.log")
check "the second came at least 2 s later ($t1, $t2)" [ $((t2 - t1)) -ge 2 ]

# 6. A failed job calls back too (job.failed).
cbjob c6 false "model: $T/missing.safetensors"
run_once
check "c6 failed" in_state c6 failed
check "its callback says job.failed" grep -q 'event=job.failed sig=ok' "$hdir/requests.log"
check "with status failed and the error" grep -q '"status":"failed".*"error":{"code":66' "$hdir/body-3.json"

# 6b. A job rejected while parsing still calls back when its callback is
# valid.
job c6b "prompt: \"bad size\"
width: 100
callback: { url: \"$url\", secret_env: HOOK_SECRET }"
n_before=$(requests)
run_once
check "a rejected job (bad width) calls back" [ "$(requests)" -eq $((n_before + 1)) ]
check "with job.failed and the field to blame" grep -q '"field":"width","line":2' "$hdir/body-$((n_before + 1)).json"

# 7. A secret variable that the worker lacks: not sent, recorded.
job c7 "prompt: \"no secret\"
callback: { url: \"$url\", secret_env: NOT_SET_ANYWHERE }"
n_before=$(requests)
run_once
check "c7 failed: its secret_env is not one the configuration lists" in_state c7 failed
check "nothing was sent" [ "$(requests)" -eq "$n_before" ]
check "the record says why" grep -q 'NOT_SET_ANYWHERE is not among' "$SPOOL/failed/c7.json"

# 8. sdbatch run calls back too.
job_file=$T/run.yaml
printf 'prompt: "from run"\ncallback: { url: "%s", secret_env: HOOK_SECRET }\n' "$url" > "$job_file"
n_before=$(requests)
"$BIN" run --config "$CONF" -o "$T/run.png" "$job_file" > /dev/null 2>&1
check "run delivers the callback" [ "$(requests)" -eq $((n_before + 1)) ]

# 9. A job whose workers died max_worker_deaths times goes to failed/ by
# recovery, and still calls back (job.failed, through the outbox).
write_conf 'max_worker_deaths: 1'
mkdir -p "$SPOOL/running"
printf 'prompt: "crashed its worker"\ncallback: { url: "%s", secret_env: HOOK_SECRET }\n' \
    "$url" > "$SPOOL/running/d1.yaml"
printf '{"host": "node-that-died", "pid": 4242, "nonce": "z"}\n' > "$SPOOL/running/d1.claim"
touch -d '1 hour ago' "$SPOOL/running/d1.claim"
n_before=$(requests)
run_once
check "d1 is failed by recovery" in_state d1 failed
check "its record says its worker died" grep -q "its worker died 1 time running it" "$SPOOL/failed/d1.json"
check "it called back once" [ "$(requests)" -eq $((n_before + 1)) ]
check "with job.failed, signed" \
    grep -q "id=msg_[0-9a-f]* ts=[0-9]* event=job.failed sig=ok" "$hdir/requests.log"
check "the body is its record" grep -q '"id":"d1","status":"failed"' "$hdir/body-$((n_before + 1)).json"
check "the record says delivered" cb_status "$SPOOL/failed/d1.json" delivered
check "nothing is owed any more" [ -z "$(ls "$SPOOL/callbacks" 2>/dev/null | grep d1)" ]
write_conf
finish
