#!/bin/sh
# Malformed and hostile job files: each ends in failed/ with a record whose
# error names the problem (and the field and line where one is to blame),
# and the worker keeps running.
. "$(dirname "$0")/spool-lib.sh"
setup

mkdir -p "$SPOOL/tmp" "$SPOOL/incoming" "$SPOOL/output" "$T/elsewhere"
# Cases: id, expected words of the error, [field], [line].
CASES=$T/cases
: > "$CASES"
# bad ID WANT FIELD LINE: the job file's text is on standard input.
bad() {
	cat > "$SPOOL/tmp/$1.part"
	printf '%s|%s|%s|%s\n' "$1" "$2" "${3:-}" "${4:-}" >> "$CASES"
}
drop() { for f in "$SPOOL"/tmp/*.part; do b=$(basename "$f" .part); mv "$f" "$SPOOL/incoming/$b.yaml"; done; }

printf '' | bad empty "empty document"
printf '# just a comment\n' | bad comments "empty document"
printf -- '- prompt: a\n- prompt: b\n' | bad list "not a list" "" 1
printf 'just words\n' | bad scalar "not a scalar" "" 1
printf 'prompt: a\n---\nprompt: b\n' | bad twodocs "more than one YAML document" "" 2
printf 'prompt: a\nsteps: 2\nprompt: b\n' | bad dupkey "duplicate key (first given on line 1)" "" 3
printf 'a: &a [x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b]\nprompt: *c\n' |
    bad bomb "anchors" "" 1
printf 'prompt: !!python/object/apply:os.system ["rm -rf /"]\n' | bad tag "tags" "" 1
{ printf 'prompt: "'; head -c 20000 /dev/zero | tr '\0' a; printf '"\n'; } | bad hugestring "over the limit of 16384" "" 1
{ printf 'prompt: x\nmetadata:\n'; i=0; while [ $i -lt 2000 ]; do echo "  - aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"; i=$((i+1)); done; } |
    bad hugefile "too large"
printf 'prompt: caf\351\n' | bad latin1 "invalid UTF-8" "" 1
printf '\377\376p\000r\000o\000m\000p\000t\000:\000 \000a\000\n\000' | bad utf16 "invalid UTF-8" "" 1
printf 'prompt: a\000b\n' | bad nul "YAML syntax error" "" 1
printf 'prompt: x\nmetadata: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n' |
    bad deep "nested too deeply" "" 2
printf 'prompt: "a\n' | bad unterminated "YAML syntax error"
printf 'promt: a cat\n' | bad typo 'unknown field (did you mean "prompt"?)' promt 1
printf 'width: 64\n' | bad noprompt "missing" prompt
printf 'prompt: a\nwidth: wide\n' | bad widthword "expected an integer" width 2
printf 'prompt: a\nheight: 100\n' | bad height100 "100 is not a multiple of 8" height 2
printf 'prompt: a\nsteps: 100000\n' | bad steps "out of range" steps 2
printf 'prompt: a\nsampler: warp_drive\n' | bad sampler 'unknown sampler "warp_drive"' sampler 2
printf 'prompt: a\ncount: -1\n' | bad count "out of range" count 2
printf 'prompt: a\nseed: 1.5\n' | bad seed "expected an integer" seed 2
printf 'prompt: a\nguidance_scale: .inf\n' | bad guidance "expected a number" guidance_scale 2
printf 'prompt: a\noutput:\n  dir: ../../../../tmp/x\n' | bad traversal '".." is not allowed' output.dir 3
printf 'prompt: a\noutput: { dir: %s }\n' "$T/elsewhere" | bad absolute "outside the output root" output 2
printf 'prompt: a\noutput: { name: "../../x.png" }\n' | bad nameslash "may not hold '/'" output.name 2
ln -s "$T/elsewhere" "$SPOOL/output/escape"
printf 'prompt: a\noutput: { dir: escape }\n' | bad symlinkout "symbolic link" output 2
printf 'prompt: a\nmodel: %s/no-such-model.safetensors\n' "$T" | bad nomodel "not found" model 2
printf 'prompt: a\n\ninit_image: %s/missing.png\n' "$T" | bad noinit "no such file" init_image 3
printf 'not a png' > "$T/garbage.png"
printf 'prompt: a\ninit_image: %s/garbage.png\n' "$T" | bad garbageinit "garbage.png" init_image 2
printf 'prompt: a\nstrength: 0.5\n' | bad strength "give an init_image" strength 2
printf 'prompt: a\nmask: m.png\n' | bad mask "needs an init_image" mask 2
printf 'prompt: a\ncallback: { url: "ftp://example.com/x" }\n' | bad ftp "only http:// and https://" callback.url 2
printf 'prompt: a\ncallback: { url: "http://127.0.0.1:1/", secret_env: "not a name" }\n' |
    bad secretenv "not an environment variable name" callback.secret_env 2
{ printf 'prompt: "'; head -c 5000 /dev/zero | tr '\0' x; printf '"\n'; } | bad longprompt "over the limit of 4000" prompt 1
printf 'prompt: a\nextra: [1, 2]\nmetadata: {a: 1}\n' | bad unknown "unknown field" extra 2
drop

# Files with bad names, links and special files.
printf 'prompt: a\n' > "$SPOOL/tmp/x"
mv "$SPOOL/tmp/x" "$SPOOL/incoming/bad name!.yaml"
printf 'prompt: a\n' > "$SPOOL/tmp/x"
mv "$SPOOL/tmp/x" "$SPOOL/incoming/-dash.yaml"
printf 'prompt: "a valid job elsewhere"\n' > "$T/elsewhere/real.yaml"
ln -s "$T/elsewhere/real.yaml" "$SPOOL/incoming/link.yaml"
ln -s /etc/passwd "$SPOOL/incoming/passwd.yaml"
printf 'link|symbolic link||\npasswd|symbolic link||\n' >> "$CASES"
mkfifo "$SPOOL/incoming/fifo.yaml" && printf 'fifo|not a regular file||\n' >> "$CASES"
# Ignored: folders, dotfiles, partial files, other extensions.
mkdir "$SPOOL/incoming/folder.yaml"
printf 'prompt: a\n' > "$SPOOL/incoming/.hidden.yaml"
printf 'prompt: a\n' > "$SPOOL/incoming/partial.yaml.tmp"
printf 'prompt: a\n' > "$SPOOL/incoming/readme.txt"

# A valid job after all of them.
start_worker a; wa=$worker_pid
ncases=$(wc -l < "$CASES")
job zgood 'prompt: "still alive"'
all_failed() { [ "$(count_files "$SPOOL/failed" '\.json$')" -ge $((ncases + 2)) ]; }
check "the worker rejects all $ncases + 2 bad jobs" wait_for 240 all_failed
check "and still runs the good one" wait_for 120 in_state zgood done
check "the worker is still running" alive $wa

while IFS='|' read -r id want field line; do
	rec=$SPOOL/failed/$id.json
	if [ ! -f "$rec" ]; then
		not_ok "$id: no record in failed/"
		continue
	fi
	msg=$(sed -n 's/^    "message": "\(.*\)",\{0,1\}$/\1/p' "$rec" | sed 's/\\"/"/g')
	good=1
	case $msg in *"$want"*) ;; *) good=0 ;; esac
	[ "$(json_field "$rec" status)" = failed ] || good=0
	[ -f "$SPOOL/failed/$id.yaml" ] || [ -L "$SPOOL/failed/$id.yaml" ] || [ -p "$SPOOL/failed/$id.yaml" ] || good=0
	if [ -n "$field" ] && ! grep -q "\"field\": \"$field\"" "$rec"; then good=0; fi
	if [ -n "$line" ] && ! grep -q "\"line\": $line\$" "$rec"; then good=0; fi
	if [ $good -eq 1 ]; then
		ok "$id: $msg"
	else
		not_ok "$id: want \"$want\" field \"$field\" line \"$line\", got: $msg"
	fi
done < "$CASES"
badnames=$(ls "$SPOOL/failed" | grep -c 'badname.*\.json$')
check "two files with bad names are in failed/ under safe names ($badnames)" [ "$badnames" -eq 2 ]
check "their error says why" grep -q 'not a valid job id' "$SPOOL"/failed/*badname*.json
check "the link target was not touched" [ -f "$T/elsewhere/real.yaml" ]
check "nothing was written outside the output root" [ -z "$(ls -A "$T/elsewhere" | grep -v real.yaml)" ]
check "folders, dotfiles, *.tmp and *.txt in incoming/ are left alone" \
    [ -d "$SPOOL/incoming/folder.yaml" -a -f "$SPOOL/incoming/.hidden.yaml" -a -f "$SPOOL/incoming/partial.yaml.tmp" -a -f "$SPOOL/incoming/readme.txt" ]
check "running/ is empty" [ -z "$(ls -A "$SPOOL/running")" ]
check "every rejection is in its progress log" [ "$(cat "$SPOOL"/logs/*.jsonl | grep -c '"event":"failed"')" -ge $((ncases + 2)) ]
kill -TERM $wa; wait $wa; rc=$?
check "the worker exits 0 on SIGTERM (got $rc)" [ $rc -eq 0 ]
finish
