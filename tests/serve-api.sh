#!/bin/sh
# sdbatch serve: submit over HTTP (both shapes), follow the stream to the
# end (two clients at once, the order of events, the final PNG), resume
# with Last-Event-ID, cancel, restart the server in the middle of a job,
# and 40-odd bad requests that each get the right 4xx and leave the spool
# as it was.  Real binary, tiny model, curl.
. "$(dirname "$0")/spool-lib.sh"
. "$(dirname "$0")/serve-lib.sh"
serve_setup
ART=${SDBATCH_ARTIFACTS:-$BUILDDIR/tests/artifacts}
mkdir -p "$ART"

start_serve s1 || { not_ok "serve starts"; finish; }
ok "serve starts on $URL"
code=$(http GET /healthz)
check "GET /healthz: 200 (got $code)" [ "$code" = 200 ]

# --- submit in the {"operation": ...} shape, two streams, the worker -----
REQ='{"operation": {"type": "SDGenerate", "prompt": "a lighthouse at dusk",
  "negative_prompt": "blurry", "steps": 4, "cfg_scale": 6.5, "seed": 42}}'
code=$(post_json "$REQ" -D "$T/submit.headers")
check "POST /v1/jobs (operation shape): 202 (got $code)" [ "$code" = 202 ]
cp "$T/body" "$T/submit.json"
ID=$(body_field job_id)
check "the answer has job_id and stream_url" \
    [ -n "$ID" -a "$(body_field stream_url)" = "/v1/jobs/$ID/stream" ]
check "the job is queued in the spool" in_state "$ID" incoming
check "the job file holds the mapped fields" \
    grep -q '"guidance_scale": 6.5' "$SPOOL/incoming/$ID.yaml"
code=$(http GET "/v1/jobs/$ID")
check "GET /v1/jobs/ID: 200 queued" [ "$code" = 200 ] && grep -q '"status": "queued"' "$T/body"

curl -sN --max-time 300 "$URL/v1/jobs/$ID/stream" > "$T/s1.out" & c1=$!
curl -sN --max-time 300 "$URL/v1/jobs/$ID/stream" > "$T/s2.out" & c2=$!
start_worker w1 --once
check "both streams end when the job is done" wait_for 300 exited "$c1"
wait_for 20 exited "$c2"
wait "$c1" "$c2" 2>/dev/null
data_lines "$T/s1.out" > "$T/s1.data"
diag "stream: $(head -c 300 "$T/s1.data" | tr '\n' '|')"
expected="Claimed by a worker
Loading the model
Step 1/4
Step 2/4
Step 3/4
Step 4/4
Image 1/1 written"
check "the events come in order: claimed, loading, steps 1-4, image" \
    [ "$(head -7 "$T/s1.data")" = "$expected" ]
check "then one last event: the result record, status done" \
    sh -c "[ \$(wc -l < '$T/s1.data') -eq 8 ] && tail -1 '$T/s1.data' | grep -q '^{\"id\":\"$ID\",\"status\":\"done\"'"
check "every event has an id, increasing" sh -c "sed -n 's/^id: //p' '$T/s1.out' | sort -n -c"
# (keep-alive comments come by the clock: not compared)
grep -v '^:' "$T/s1.out" > "$T/s1.ev"
grep -v '^:' "$T/s2.out" > "$T/s2.ev"
check "the second stream got the same events" cmp -s "$T/s1.ev" "$T/s2.ev"
check "the job is done" in_state "$ID" done
# The transcript of this job, kept beside the screenshots.
{
	echo "> POST /v1/jobs HTTP/1.1"
	echo "> Content-Type: application/json"
	echo ">"
	echo "$REQ"
	echo
	tr -d '\r' < "$T/submit.headers" | sed '/^$/d; s/^/< /'
	echo "<"
	cat "$T/submit.json"
	echo
	echo "> GET /v1/jobs/$ID/stream HTTP/1.1"
	echo
	cat "$T/s1.out"
} > "$ART/serve-transcript.txt"

# --- the image -------------------------------------------------------------
code=$(http GET "/v1/jobs/$ID/images/0.png")
cp "$T/body" "$T/img0.png"
want=$(sed -n 's/^ *"sha256": "\(.*\)"$/\1/p' "$SPOOL/done/$ID.json" | head -1)
got=$(sha256sum "$T/img0.png" | cut -d' ' -f1)
check "GET /v1/jobs/ID/images/0.png: 200 and the PNG of the record" \
    [ "$code" = 200 -a -n "$want" -a "$want" = "$got" ]
check "the result event names the image's URL" \
    grep -q "\"url\":\"/v1/jobs/$ID/images/0.png\"" "$T/s1.data"
check "and the same sha256" grep -q "\"sha256\":\"$want\"" "$T/s1.data"
curl -sN --max-time 60 "$URL/v1/jobs/$ID/stream?include_images=true" > "$T/s3.out"
data_lines "$T/s3.out" | tail -1 | sed -n 's/.*"png_base64":"\([^"]*\)".*/\1/p' | base64 -d > "$T/b64.png" 2>/dev/null
check "include_images=true: the PNG as base64 in the result event" \
    [ "$(sha256sum < "$T/b64.png" | cut -d' ' -f1)" = "$want" ]
code=$(http GET "/v1/jobs/$ID")
check "GET /v1/jobs/ID: done, with the record" \
    [ "$code" = 200 ] && grep -q '"status": "done"' "$T/body" && grep -q '"record"' "$T/body"

# --- Last-Event-ID ---------------------------------------------------------
third=$(sed -n 's/^id: //p' "$T/s1.out" | sed -n 3p)
curl -sN --max-time 60 -H "Last-Event-ID: $third" "$URL/v1/jobs/$ID/stream" > "$T/s4.out"
data_lines "$T/s4.out" > "$T/s4.data"
check "Last-Event-ID resumes after that event" \
    [ "$(head -1 "$T/s4.data")" = "Step 2/4" -a "$(wc -l < "$T/s4.data")" -eq 5 ]
tail -1 "$T/s1.data" > "$T/last1"
tail -1 "$T/s4.data" > "$T/last4"
check "and ends with the same result" cmp -s "$T/last1" "$T/last4"

# --- a job as JSON with the job file's fields --------------------------------
code=$(post_json '{"prompt": "plain fields", "steps": 2, "seed": 7, "count": 2,
  "metadata": {"ticket": 12}}')
check "POST /v1/jobs (job fields): 202 (got $code)" [ "$code" = 202 ]
ID2=$(body_field job_id)

# --- cancel ------------------------------------------------------------------
code=$(http DELETE "/v1/jobs/$ID2")
check "DELETE of a queued job: 202 cancelled (got $code)" \
    [ "$code" = 202 ] && grep -q '"status": "cancelled"' "$T/body"
check "it went to failed/" in_state "$ID2" failed
curl -sN --max-time 30 "$URL/v1/jobs/$ID2/stream" > "$T/s5.out"
check "its stream ends with status cancelled" \
    sh -c "data_lines() { sed -n 's/^data: //p' \"\$1\"; }; data_lines '$T/s5.out' | tail -1 | grep -q '\"status\":\"cancelled\"'"
code=$(http DELETE "/v1/jobs/$ID2")
check "DELETE again: 409 (got $code)" [ "$code" = 409 ]

code=$(post_json '{"prompt": "a long one", "steps": 40, "width": 128, "height": 128}')
ID3=$(body_field job_id)
start_worker w2
curl -sN --max-time 300 "$URL/v1/jobs/$ID3/stream" > "$T/s6.out" & c6=$!
step2() { grep -q '^data: Step 2/40' "$T/s6.out"; }
check "a running job streams its steps" wait_for 120 step2
code=$(http DELETE "/v1/jobs/$ID3")
check "DELETE of a running job: 202 cancelling (got $code)" \
    [ "$code" = 202 ] && grep -q '"status": "cancelling"' "$T/body"
check "its stream ends" wait_for 300 exited "$c6"
check "with status cancelled" sh -c "sed -n 's/^data: //p' '$T/s6.out' | tail -1 | grep -q '\"status\":\"cancelled\"'"
check "before the last step" sh -c "! grep -q '^data: Step 40/40' '$T/s6.out'"

# --- a restart of serve in the middle of a job --------------------------------
code=$(post_json '{"prompt": "through a restart", "steps": 30, "width": 128, "height": 128, "seed": 3}')
ID4=$(body_field job_id)
curl -sN --max-time 300 "$URL/v1/jobs/$ID4/stream" > "$T/r1.out" & c7=$!
step3() { grep -q '^data: Step 3/30' "$T/r1.out"; }
check "the job runs (step 3 streamed)" wait_for 120 step3
stop_serve "$serve_pid"
check "serve stops on SIGTERM" exited "$serve_pid"
check "no sanitizer report from the first server" sanitizer_clean s1
check "the open stream ends with it" wait_for 20 exited "$c7"
last=$(sed -n 's/^id: //p' "$T/r1.out" | tail -1)
start_serve s2 || not_ok "serve starts again"
curl -sN --max-time 300 -H "Last-Event-ID: $last" "$URL/v1/jobs/$ID4/stream" > "$T/r2.out"
{ data_lines "$T/r1.out"; data_lines "$T/r2.out"; } > "$T/r.data"
grep '^Step' "$T/r.data" > "$T/r.steps"
seq 1 30 | sed 's|^\(.*\)$|Step \1/30|' > "$T/r.want"
check "resumed after the restart: every step once, in order" cmp -s "$T/r.steps" "$T/r.want"
check "and the result: done" sh -c "tail -1 '$T/r.data' | grep -q '\"status\":\"done\"'"
check "the job is done in the spool" in_state "$ID4" done
kill -TERM "$worker_pid" 2>/dev/null

# --- bad requests: the right 4xx, a JSON error, nothing in the spool ----------
snapshot() { (cd "$SPOOL" && find incoming running done failed tmp -type f | sort); }
snapshot > "$T/before"
nbad=0
# bad EXPECTED FIELD METHOD PATH [CURL ARGS...]: FIELD "-" for none.
bad() {
	_want=$1 _field=$2
	shift 2
	_m=$1 _p=$2
	nbad=$((nbad + 1))
	_got=$(http "$@")
	if [ "$_got" = "$_want" ] && grep -q '"error"' "$T/body" &&
	    { [ "$_field" = - ] || grep -q "\"field\": \"$_field\"" "$T/body"; }; then
		ok "bad request $nbad: $_m $(printf '%.60s' "$_p") -> $_want"
	else
		not_ok "bad request $nbad: $_m $(printf '%.60s' "$_p") -> $_got, not $_want ($_field)"
		sed 's/^/# /' "$T/body" | head -8
	fi
}
J='Content-Type: application/json'
bad 400 body POST /v1/jobs -H "$J" --data-binary '{"prompt": "a",'
bad 400 body POST /v1/jobs -H "$J" --data-binary '[1, 2]'
bad 400 body POST /v1/jobs -H "$J" --data-binary '"a prompt"'
bad 400 body POST /v1/jobs -H "$J" --data-binary ''
bad 400 body POST /v1/jobs -H "$J" --data-binary '{"prompt": "a", "prompt": "b"}'
bad 400 body POST /v1/jobs -H "$J" --data-binary '{"prompt": "a\u0000b"}'
bad 400 body POST /v1/jobs -H "$J" --data-binary '{"prompt": "a", "seed": 99999999999999999999999}'
bad 422 colour POST /v1/jobs -H "$J" --data-binary '{"prompt": "a", "colour": "red"}'
bad 422 prompt POST /v1/jobs -H "$J" --data-binary '{"steps": 2}'
bad 422 prompt POST /v1/jobs -H "$J" --data-binary '{"prompt": "   "}'
bad 422 steps POST /v1/jobs -H "$J" --data-binary '{"prompt": "a", "steps": 0}'
bad 422 steps POST /v1/jobs -H "$J" --data-binary '{"prompt": "a", "steps": 100000}'
bad 422 width POST /v1/jobs -H "$J" --data-binary '{"prompt": "a", "width": 65}'
bad 422 height POST /v1/jobs -H "$J" --data-binary '{"prompt": "a", "height": "tall"}'
bad 422 sampler POST /v1/jobs -H "$J" --data-binary '{"prompt": "a", "sampler": "magic"}'
bad 422 count POST /v1/jobs -H "$J" --data-binary '{"prompt": "a", "count": 1000}'
bad 422 guidance_scale POST /v1/jobs -H "$J" --data-binary '{"prompt": "a", "guidance_scale": -1}'
long=$(head -c 5000 /dev/zero | tr '\0' 'x')
bad 422 prompt POST /v1/jobs -H "$J" --data-binary "{\"prompt\": \"$long\"}"
bad 422 callback.url POST /v1/jobs -H "$J" --data-binary '{"prompt": "a", "callback": {"url": "file:///etc/passwd"}}'
bad 422 output.dir POST /v1/jobs -H "$J" --data-binary '{"prompt": "a", "output": {"dir": "../../etc"}}'
bad 422 output.name POST /v1/jobs -H "$J" --data-binary '{"prompt": "a", "output": {"name": "../x.png"}}'
bad 422 operation.type POST /v1/jobs -H "$J" --data-binary '{"operation": {"type": "SDUpscale", "prompt": "a"}}'
bad 422 operation POST /v1/jobs -H "$J" --data-binary '{"operation": "SDGenerate"}'
bad 422 operation.colour POST /v1/jobs -H "$J" --data-binary '{"operation": {"type": "SDGenerate", "prompt": "a", "colour": 1}}'
bad 422 operation.steps POST /v1/jobs -H "$J" --data-binary '{"operation": {"type": "SDGenerate", "prompt": "a", "steps": -3}}'
bad 422 extra POST /v1/jobs -H "$J" --data-binary '{"operation": {"type": "SDGenerate", "prompt": "a"}, "extra": 1}'
bad 422 operation.cfg_scale POST /v1/jobs -H "$J" --data-binary '{"operation": {"type": "SDGenerate", "prompt": "a", "guidance_scale": 5, "cfg_scale": 6}}'
head -c 1000000 /dev/zero | tr '\0' ' ' > "$T/huge.json"
bad 413 body POST /v1/jobs -H "$J" --data-binary "@$T/huge.json"
bad 413 body POST /v1/jobs -H "$J" -H 'Transfer-Encoding: chunked' --data-binary "@$T/huge.json"
bad 415 Content-Type POST /v1/jobs -H 'Content-Type: text/plain' --data-binary '{"prompt": "a"}'
bad 415 Content-Type POST /v1/jobs --data-binary '{"prompt": "a"}'
bad 400 id GET '/v1/jobs/..%2F..%2Fetc%2Fpasswd'
bad 400 id GET '/v1/jobs/.hidden'
bad 400 id DELETE '/v1/jobs/..'
bad 400 id GET "/v1/jobs/$(head -c 200 /dev/zero | tr '\0' a)"
bad 404 id GET /v1/jobs/no-such-job
bad 404 id GET /v1/jobs/no-such-job/stream
bad 404 id DELETE /v1/jobs/no-such-job
bad 400 image GET "/v1/jobs/$ID/images/..%2F..%2F..%2Fetc%2Fpasswd"
bad 400 image GET "/v1/jobs/$ID/images/-1.png"
bad 400 image GET "/v1/jobs/$ID/images/00.png"
bad 400 image GET "/v1/jobs/$ID/images/0.jpg"
bad 404 image GET "/v1/jobs/$ID/images/5.png"
bad 400 size GET "/v1/jobs/$ID/images/0.png?size=huge"
bad 400 size GET "/v1/jobs/$ID/images/0.png?size=5"
bad 400 Last-Event-ID GET "/v1/jobs/$ID/stream" -H 'Last-Event-ID: ../../x'
bad 400 include_images GET "/v1/jobs/$ID/stream?include_images=maybe"
bad 405 - PUT /v1/jobs -H "$J" --data-binary '{"prompt": "a"}'
bad 405 - POST "/v1/jobs/$ID" -H "$J" --data-binary '{"prompt": "a"}'
bad 405 - OPTIONS /v1/jobs -H 'Origin: https://evil.example'
bad 404 - GET /etc/passwd
bad 403 Host GET /v1/jobs -H 'Host: evil.example'
check "no CORS header without serve.cors_origin" sh -c "! curl -s -i -H 'Origin: https://evil.example' '$URL/v1/jobs' | grep -qi '^Access-Control'"
# A record whose image lies outside the output root, or behind a link.
mkdir -p "$SPOOL/output/evil"
ln -s /etc/passwd "$SPOOL/output/evil/link.png"
printf 'prompt: "x"\n' > "$SPOOL/done/evil.yaml"
printf '{"id": "evil", "status": "done", "images": [{"path": "/etc/passwd"}, {"path": "%s"}, {"path": "%s"}]}\n' \
    "$SPOOL/output/evil/link.png" "$SPOOL/output/evil/../../../../etc/passwd" > "$SPOOL/done/evil.json"
snapshot > "$T/before"
bad 403 image GET /v1/jobs/evil/images/0.png
bad 403 image GET /v1/jobs/evil/images/1.png
bad 403 image GET /v1/jobs/evil/images/2.png
snapshot > "$T/after"
check "none of the $nbad bad requests left anything in the spool" cmp -s "$T/before" "$T/after"
check "at least 40 bad requests were tried" [ "$nbad" -ge 40 ]
stop_serve "$serve_pid"
check "no sanitizer report after the bad requests" sanitizer_clean s2

# --- CORS, when configured ------------------------------------------------------
write_conf 'serve: { cors_origin: "https://app.example" }'
start_serve s5 || not_ok "serve starts with cors_origin"
curl -s -i -X OPTIONS -H 'Origin: https://app.example' \
    -H 'Access-Control-Request-Method: POST' "$URL/v1/jobs" | tr -d '\r' > "$T/cors1"
check "cors_origin: a preflight gets 204 and the allowed origin" \
    sh -c "head -1 '$T/cors1' | grep -q ' 204' && grep -qi '^Access-Control-Allow-Origin: https://app.example\$' '$T/cors1' && grep -qi '^Access-Control-Allow-Headers: .*Authorization' '$T/cors1'"
curl -s -i -H 'Origin: https://evil.example' "$URL/v1/jobs" | tr -d '\r' > "$T/cors2"
check "another origin gets no CORS header" sh -c "! grep -qi '^Access-Control' '$T/cors2'"
stop_serve "$serve_pid"

# --- a token ------------------------------------------------------------------
write_conf 'serve: { token: "s3cret-token-0123456789" }'
start_serve s3 || not_ok "serve starts with a token"
code=$(http GET /v1/jobs)
check "no token: 401 (got $code)" [ "$code" = 401 ] && grep -q '"field": "Authorization"' "$T/body"
code=$(http GET /v1/jobs -H 'Authorization: Bearer s3cret-token-0123456788')
check "a wrong token: 401 (got $code)" [ "$code" = 401 ]
code=$(http GET /v1/jobs -H 'Authorization: Bearer s3cret-token')
check "a prefix of the token: 401 (got $code)" [ "$code" = 401 ]
code=$(post_json '{"prompt": "no token"}')
check "POST without the token: 401, nothing queued (got $code)" \
    [ "$code" = 401 ] && [ "$(count_files "$SPOOL/incoming" yaml)" -eq 0 ]
code=$(http GET /v1/jobs -H 'Authorization: Bearer s3cret-token-0123456789')
check "the token: 200 (got $code)" [ "$code" = 200 ]
code=$(http GET /healthz)
check "/healthz needs no token (got $code)" [ "$code" = 200 ]
# SIGHUP: ignored, without spinning.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
kill -HUP "$serve_pid"
sleep 0.3
t0=$(cpu_ticks "$serve_pid")
sleep 1
t1=$(cpu_ticks "$serve_pid")
code=$(http GET /healthz)
check "after SIGHUP serve still answers, idle ($((t1 - t0)) ticks in 1 s)" \
    [ "$code" = 200 -a $((t1 - t0)) -lt 10 ]
stop_serve "$serve_pid"
write_conf
"$BIN" serve --config "$CONF" --listen 0.0.0.0:0 "$SPOOL" 2> "$T/public.err"; rc=$?
check "a public address without a token: exit 78 (got $rc)" [ $rc -eq 78 ]
check "and says why" grep -q "needs a bearer token" "$T/public.err"
SDBATCH_SERVE_TOKEN=env-token-0123456789abcdef
export SDBATCH_SERVE_TOKEN
"$BIN" serve --config "$CONF" --listen 127.0.0.1:bad "$SPOOL" 2> "$T/badlisten.err"; rc=$?
check "--listen with a bad port: exit 78 (got $rc)" [ $rc -eq 78 ]
start_serve s4 || not_ok "serve starts with SDBATCH_SERVE_TOKEN"
code=$(http GET /v1/jobs)
check "SDBATCH_SERVE_TOKEN is required too (got $code)" [ "$code" = 401 ]
code=$(http GET /v1/jobs -H "Authorization: Bearer $SDBATCH_SERVE_TOKEN")
check "and accepted (got $code)" [ "$code" = 200 ]
stop_serve "$serve_pid"
unset SDBATCH_SERVE_TOKEN
write_conf 'serve: { token: "short" }'
"$BIN" serve --config "$CONF" "$SPOOL" 2> "$T/short.err"; rc=$?
check "a token under 16 characters: exit 78 (got $rc)" [ $rc -eq 78 ]
check "naming the key" grep -q "serve.token" "$T/short.err"
write_conf
"$BIN" serve "$T/no-spool" 2> /dev/null; rc=$?
check "serve of a missing spool: exit 66 (got $rc)" [ $rc -eq 66 ]
finish
