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

# LoRA files (issue 21): a job's loras: inside the input roots, one answer
# whether a file outside exists or not; lora_dirs outside the roots are a
# configuration error; <lora:NAME> stays inside its lora_dir.
LORA=$TINY/lora/lora_attn_r4.safetensors
if [ -f "$LORA" ]; then
	mkdir -p "$T/inputs/loras"
	cp "$LORA" "$T/inputs/loras/detail.safetensors"
	ln -s /etc/passwd "$T/inputs/loras/passwd.safetensors"
	ln -s /etc/no-such-file "$T/inputs/loras/nothing.safetensors"
	ln -s "$T/inputs/m.safetensors" "$T/inputs/loras/model.safetensors"
	cp "$LORA" "$T/outside.safetensors"
	ln -s "$T/outside.safetensors" "$T/inputs/loras/out.safetensors"
	ROOTS="policy: { input_roots: [$T/inputs], callback_http: true, callback_private: true }"
	POLICY=$ROOTS write_conf "lora_dirs: $T/inputs/loras"
	job l1 'prompt: "x"
loras: [/etc/shadow]'
	job l2 'prompt: "x"
loras: [{ file: /etc/no-such-file, scale: 0.5 }]'
	job l3 "prompt: \"x\"
loras: [$T/inputs/loras/out.safetensors]"
	job l4 "prompt: \"x\"
loras: [../../../../../../../../../../../etc/passwd]"
	job l5 "prompt: \"x\"
loras: [$T/inputs/loras/detail.safetensors:0.5]"
	job l6 'prompt: "a cat <lora:passwd:1>"
prompt_syntax: a1111'
	job l7 'prompt: "a cat <lora:nothing:1>"
prompt_syntax: a1111'
	job l8 'prompt: "a cat <lora:out:1>"
prompt_syntax: a1111'
	job l9 'prompt: "a cat <lora:../outside:1>"
prompt_syntax: a1111'
	job l10 'prompt: "a cat <lora:detail:0.5>"
prompt_syntax: a1111'
	job l11 'prompt: "a cat <lora:model:1>"
prompt_syntax: a1111'
	run_once
	check "a LoRA outside the roots is refused" grep -q "loras: /etc/shadow is outside the configuration's input roots" "$SPOOL/failed/l1.json"
	check "the same answer for a LoRA outside that does not exist" \
	    [ "$(msg l1 | sed 's|/etc/shadow|X|')" = "$(msg l2 | sed 's|/etc/no-such-file|X|')" ]
	check "its field is loras" grep -q '"field": "loras"' "$SPOOL/failed/l2.json"
	check "a symbolic link in a root to a LoRA outside is refused" grep -q "is outside the configuration's input roots" "$SPOOL/failed/l3.json"
	check "a relative LoRA path out of the roots is refused" grep -q "is outside the configuration's input roots" "$SPOOL/failed/l4.json"
	check "a LoRA inside the roots renders" in_state l5 done
	check "<lora:NAME> that is a link out of its lora_dir is refused" \
	    grep -q "<lora:passwd>: .*passwd.safetensors is a symbolic link that does not lead to a file inside its lora_dir" "$SPOOL/failed/l6.json"
	check "the same answer for a link to nothing" \
	    [ "$(msg l6 | sed 's|passwd|X|g')" = "$(msg l7 | sed 's|nothing|X|g')" ]
	check "and for a link to a LoRA outside it" \
	    [ "$(msg l6 | sed 's|passwd|X|g')" = "$(msg l8 | sed 's|out|X|g')" ]
	check "<lora:NAME>, a link out of its lora_dir but inside the roots, is refused too" \
	    grep -q "<lora:model>: .* is a symbolic link that does not lead" "$SPOOL/failed/l11.json"
	check "<lora:../NAME> may not name a path" grep -q "may not contain '/'" "$SPOOL/failed/l9.json"
	check "<lora:NAME> inside its lora_dir renders" in_state l10 done
	check "no message quotes /etc/passwd's bytes" no grep -rq "root:" "$SPOOL/failed"
	# lora_dirs outside the roots: the configuration is refused (exit 78)
	POLICY=$ROOTS write_conf "lora_dirs: [$T/inputs/loras, /etc]"
	"$BIN" watch --once --config "$CONF" "$SPOOL" 2> "$T/conf.err"
	rc=$?
	check "lora_dirs outside the input roots: a configuration error (exit $rc)" [ "$rc" -eq 78 ]
	check "  that names the folder" grep -q "lora_dirs: /etc is outside the input roots" "$T/conf.err"
	POLICY=$ROOTS write_conf "lora_dirs: $T/inputs/../outside-dir"
	"$BIN" run --config "$CONF" --prompt x -o "$T/x.png" > /dev/null 2> "$T/conf.err"
	rc=$?
	check "  also for sdbatch run, and through .. (exit $rc)" [ "$rc" -eq 78 ]
else
	diag "no LoRA in $TINY/lora: the LoRA checks are left out"
fi
finish
