#!/bin/sh
# Terminal escapes in job values and file names never reach a terminal raw
# (issue 15, item 12): the worker's stderr, `status` and `run`'s errors
# print control characters escaped.
. "$(dirname "$0")/spool-lib.sh"
setup

ESC=$(printf '\033')
BEL=$(printf '\007')
mkdir -p "$SPOOL/incoming" "$SPOOL/tmp"
# a file name that sets the window title; a value that paints red (YAML's
# \\e escape: raw control characters are refused by the YAML reader)
printf 'prompt: "x"\n' > "$SPOOL/tmp/t"
mv "$SPOOL/tmp/t" "$SPOOL/incoming/${ESC}]0;owned${BEL}x.yaml"
job red 'prompt: "x"
sampler: "\e[31mred"'
"$BIN" watch --once -v --config "$CONF" "$SPOOL" 2> "$T/w.err"
raw() { grep -q "[$ESC$BEL]" "$1"; }
check "both jobs failed" [ "$(ls "$SPOOL/failed" | grep -c '\.json$')" -eq 2 ]
check "the worker's stderr has no raw escape" no raw "$T/w.err"
check "it shows them escaped" grep -q '\\e\]0;owned\\x07x' "$T/w.err"
"$BIN" status "$SPOOL" > "$T/status.out" 2>&1
check "status has no raw escape" no raw "$T/status.out"
check "status shows the value escaped" grep -q '\\e\[31mred' "$T/status.out"
printf 'prompt: "x"\nsampler: "\\e[31mred"\n' > "$T/bad.yaml"
"$BIN" run --config "$CONF" -o "$T/x.png" "$T/bad.yaml" 2> "$T/run.err"
check "run's error has no raw escape" no raw "$T/run.err"
check "and names the field" grep -q 'sampler' "$T/run.err"
finish
