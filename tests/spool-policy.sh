#!/bin/sh
# The configuration's trust policy (issue 15, item 10): a job reads models
# and images only inside the input roots (one answer whether a path outside
# exists or not); callbacks go over https to public addresses unless
# allowed, to the listed hosts only; secret_env only names variables the
# configuration lists.
. "$(dirname "$0")/spool-lib.sh"
setup
[ -x "$HOOKD" ] || skip_all "tests/hookd is not built"

hdir=$T/hook
mkdir -p "$hdir"
"$HOOKD" -p "$hdir/port" -d "$hdir" -m ok -t 300 &
pids="$pids $!"
wait_for 30 test -s "$hdir/port" || { not_ok "hookd did not start"; finish; }
url="http://127.0.0.1:$(cat "$hdir/port")/hook"
requests() { _n=$(grep -c '^n=' "$hdir/requests.log" 2>/dev/null); echo "${_n:-0}"; }
run_once() { "$BIN" watch --once --config "$CONF" "$SPOOL" 2>> "$T/once.err"; }
# the message without the file:line prefix
msg() { sed -n 's/^ *"message": "\(.*\)",\{0,1\}$/\1/p' "$SPOOL/failed/$1.json" | head -1 | sed 's/^[^ ]*yaml:[0-9]*: //'; }

# Without a policy: no plain http, no loopback, no secrets.
POLICY= write_conf
job h1 "prompt: \"x\"
callback: { url: \"$url\" }"
run_once
check "plain http is refused by default" grep -q "plain http is not allowed" "$SPOOL/failed/h1.json"
POLICY='policy: { callback_http: true }' write_conf
job h2 "prompt: \"x\"
callback: { url: \"$url\" }"
run_once
check "http allowed: the job is done" in_state h2 done
check "but 127.0.0.1 is loopback: not sent" grep -q "loopback, link-local or private" "$SPOOL/done/h2.json"
check "nothing reached the receiver" [ "$(requests)" -eq 0 ]
POLICY='policy: { callback_http: true, callback_private: true, callback_hosts: [hooks.example.com] }' write_conf
job h3 "prompt: \"x\"
callback: { url: \"$url\" }"
run_once
check "a host not on callback_hosts is refused" grep -q "not among the configuration's callback hosts" "$SPOOL/failed/h3.json"
POLICY='policy: { callback_http: true, callback_private: true, callback_hosts: [127.0.0.1] }' write_conf
job h4 "prompt: \"x\"
callback: { url: \"$url\" }"
run_once
check "a listed host gets its callback" [ "$(requests)" -eq 1 ]

# secret_env: only listed variables; the same answer whether set or not.
DB_PASSWORD=hunter2
HOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
export DB_PASSWORD HOOK_SECRET
write_conf
job s1 "prompt: \"x\"
callback: { url: \"$url\", secret_env: DB_PASSWORD }"
job s2 "prompt: \"x\"
callback: { url: \"$url\", secret_env: NOT_SET_ANYWHERE }"
n0=$(requests)
run_once
check "an unlisted variable (set) is refused" grep -q "DB_PASSWORD is not among" "$SPOOL/failed/s1.json"
check "an unlisted variable (unset) gets the same answer" \
    [ "$(msg s1 | sed 's/DB_PASSWORD/X/')" = "$(msg s2 | sed 's/NOT_SET_ANYWHERE/X/')" ]
check "nothing was signed with them" [ "$(requests)" -eq "$n0" ]
HOOK_SECRET=plain-password
job s3 "prompt: \"x\"
callback: { url: \"$url\", secret_env: HOOK_SECRET }"
run_once
check "a listed variable whose value is not whsec_: not sent" \
    grep -q "not of the form whsec_" "$SPOOL/done/s3.json"
HOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw

# Input roots: outside is refused with one message, existing or not.
mkdir -p "$T/inputs"
cp "$MODEL" "$T/inputs/m.safetensors"
ln -s /etc "$T/inputs/etc"
POLICY="policy: { input_roots: [$T/inputs], callback_http: true, callback_private: true }" write_conf
job i1 'prompt: "x"
model: /etc/shadow'
job i2 'prompt: "x"
model: /etc/no-such-file'
job i3 "prompt: \"x\"
init_image: /etc/passwd"
job i4 "prompt: \"x\"
model: $T/inputs/etc/passwd"
job i5 "prompt: \"x\"
model: $T/inputs/../../etc/passwd"
job i6 "prompt: \"x\"
model: $T/inputs/m.safetensors"
run_once
check "a model outside the roots is refused" grep -q "outside the configuration's input roots" "$SPOOL/failed/i1.json"
check "the same answer for a path outside that does not exist" \
    [ "$(msg i1 | sed 's|/etc/shadow|X|')" = "$(msg i2 | sed 's|/etc/no-such-file|X|')" ]
check "an image outside is refused" grep -q "init_image: /etc/passwd is outside" "$SPOOL/failed/i3.json"
check "a symbolic link out of a root is refused" grep -q "is outside" "$SPOOL/failed/i4.json"
check "so is .. out of a root" grep -q "is outside" "$SPOOL/failed/i5.json"
check "a model inside the roots renders" in_state i6 done
check "no message quotes /etc/shadow's bytes" no grep -rq "root:" "$SPOOL/failed"
finish
