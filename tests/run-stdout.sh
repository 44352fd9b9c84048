#!/bin/sh
# The command line as Unix users expect it (issue 15, item 16): `-o -`
# writes the PNG to standard output (one image only); GNU option
# permutation (options after operands) for every subcommand; `run` fails
# when the paths cannot be written to standard output; a prompt cut at 77
# tokens is warned about on stderr; getopt's messages name "sdbatch CMD";
# "Euler a", as PNGs write it, is a sampler name; a cancelled job is
# counted as cancelled, not failed.
. "$(dirname "$0")/spool-lib.sh"
setup
cd "$T" || exit 1
R="--config $CONF --steps 1 --seed 3"
printf 'prompt: "a red cube"\nwidth: 64\nheight: 64\n' > cube.yaml

# -o -
"$BIN" run $R cube.yaml -o - > stdout.png 2> stdout.err; rc=$?
check "run -o - exits 0 (got $rc)" [ $rc -eq 0 ]
check "standard output is the PNG" sh -c "head -c 8 stdout.png | od -An -c | grep -q 'P   N   G'"
"$BIN" run $R cube.yaml -o file.png > file.out 2> /dev/null
check "the same image as -o FILE" cmp -s stdout.png file.png
check "-o FILE prints the path" grep -qx "file.png" file.out
check "and no path is printed with -o -" [ -z "$(grep -a 'file.png' stdout.png)" ]
"$BIN" run $R cube.yaml --count 2 -o - > two.png 2> two.err; rc=$?
check "-o - with count 2: exit 64 (got $rc)" [ $rc -eq 64 ]
check "the message says one image, and what to do" \
    grep -q "sdbatch run: -o -: standard output takes one image, and this job has count 2 (give -o with {index}" two.err
check "and nothing on standard output" [ ! -s two.png ]

# writing to a full standard output
if [ -w /dev/full ]; then
	"$BIN" run $R cube.yaml -o full.png > /dev/full 2> full.err; rc=$?
	check "paths to a full standard output: exit 74 (got $rc)" [ $rc -eq 74 ]
	check "the message says so" grep -q "sdbatch run: writing the paths to standard output: No space left on device" full.err
	"$BIN" run $R cube.yaml -o - > /dev/full 2> full2.err; rc=$?
	check "a PNG to a full standard output: exit 74 (got $rc)" [ $rc -eq 74 ]
	check "the message says so" grep -q "writing the PNG to standard output: No space left on device" full2.err
else
	diag "no /dev/full: not checked"
fi

# GNU option permutation: options after the operands
mkdir -p "$SPOOL"
"$BIN" run cube.yaml -o perm.png $R > perm.out 2> perm.err; rc=$?
check "run JOB -o FILE OPTIONS (got $rc)" [ $rc -eq 0 ] && [ -s perm.png ]
[ $rc -eq 0 ] || sed 's/^/# /' perm.err
"$BIN" submit "$SPOOL" cube.yaml --config "$CONF" --id p1 > sub.out 2> sub.err; rc=$?
check "submit SPOOL JOB --config FILE --id ID (got $rc)" [ $rc -eq 0 ] && grep -qx p1 sub.out
"$BIN" status "$SPOOL" --json > st.json 2> st.err; rc=$?
check "status SPOOL --json (got $rc)" [ $rc -eq 0 ] && grep -q '"state": "queued"' st.json
"$BIN" cancel "$SPOOL" p1 -q > can.out 2> can.err; rc=$?
check "cancel SPOOL ID -q (got $rc)" [ $rc -eq 0 ] && [ ! -s can.out ]
"$BIN" submit "$SPOOL" cube.yaml --id p2 --config "$CONF" > /dev/null 2>&1
"$BIN" watch "$SPOOL" --once --config "$CONF" > w.out 2> w.err; rc=$?
check "watch SPOOL --once --config FILE (got $rc)" [ $rc -eq 0 ] && in_state p2 done

# a cancelled job is its own state
"$BIN" status "$SPOOL" > st.out
check "status: p1 cancelled" grep -q "^p1 .*cancelled" st.out
check "the summary counts it as cancelled, not failed" \
    grep -q "^0 queued, 0 running, 1 done, 0 failed, 1 cancelled$" st.out
check "its record has no exit code and no worker" \
    sh -c "grep -q '\"worker\": null' '$SPOOL/failed/p1.json' && ! grep -q '\"code\"' '$SPOOL/failed/p1.json'"

# getopt's own messages name the command as "sdbatch CMD"
"$BIN" run --frobnicate 2> opt.err
check "an unknown option of run: \"sdbatch run: ...\"" grep -q "^sdbatch run: unrecognized option '--frobnicate'" opt.err
"$BIN" status -Z "$SPOOL" 2> opt2.err
check "and of status" grep -q "^sdbatch status: invalid option -- 'Z'" opt2.err

# a prompt cut at 77 tokens: a warning on stderr
long=$(i=0; while [ $i -lt 90 ]; do printf 'word%d ' $i; i=$((i + 1)); done)
"$BIN" run $R -W 64 -H 64 -p "$long" -o long.png > long.out 2> long.err; rc=$?
check "a long prompt renders (got $rc)" [ $rc -eq 0 ]
check "with a warning that it was cut, on stderr" \
    grep -q "^sdbatch run: job: warning: the prompt is [0-9]* tokens long: the text encoder reads the first 75, the rest is cut" long.err
check "not on standard output" grep -qx long.png long.out
"$BIN" run $R -W 64 -H 64 -p "short" -o short.png > /dev/null 2> short.err
check "no warning for a short prompt" [ -z "$(grep warning short.err)" ]

# "Euler a", as A1111 and sdbatch's PNG text write it
"$BIN" run $R -W 64 -H 64 -p "a" --sampler "Euler a" -o ea.png > /dev/null 2> ea.err; rc=$?
check "--sampler \"Euler a\" (got $rc)" [ $rc -eq 0 ] && grep -aq "Sampler: Euler a," ea.png
printf 'prompt: a\nwidth: 64\nheight: 64\nsampler: Euler a\n' > ea.yaml
"$BIN" submit --config "$CONF" "$SPOOL" ea.yaml > /dev/null 2> ea2.err; rc=$?
check "sampler: Euler a in a job file (got $rc)" [ $rc -eq 0 ]

finish
