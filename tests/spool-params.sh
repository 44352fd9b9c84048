#!/bin/sh
# spool-params.sh: job parameters end to end (the table in src/spool/params.c):
# what a job leaves to the model (size, steps, guidance, sampler, prediction,
# spacing) is the model's, and the PNG text and the result record carry the
# effective values; the configured limits apply to them too; "auto" asks for
# the model's over a configured default; flags and a job file make the same
# PNG.
. "$(dirname "$0")/spool-lib.sh"
# param FILE KEY: a value of a result record's parameters.
param() { sed -n "s/^    \"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" "$1" | head -1; }
setup
cd "$T" || exit 1

# The model's steps and guidance (SD 1.x: 20, 7.5); the configured size.
DEFAULTS='{ width: 64, height: 64 }' write_conf
job m1 'prompt: "a red cube"
seed: 5'
"$BIN" watch --once --config "$CONF" "$SPOOL" 2> w1.err
rec=$SPOOL/done/m1.json
check "a job with the model's defaults is done" [ -f "$rec" ]
[ -f "$rec" ] || sed 's/^/# /' w1.err "$SPOOL/failed/m1.json" 2>/dev/null
check "the record has the model's steps and guidance" \
    [ "$(param "$rec" steps)" = 20 -a "$(param "$rec" guidance_scale)" = 7.5 ]
check "the record has the sampler, prediction and spacing used" \
    [ -n "$(param "$rec" sampler)" -a "$(param "$rec" prediction)" = epsilon \
      -a -n "$(param "$rec" spacing)" ]
check "and the configured size" [ "$(param "$rec" width)" = 64 ]
png=$(ls "$SPOOL"/output/m1/*.png 2>/dev/null | head -1)
check "the PNG text has the effective values" \
    grep -aq "Steps: 20, Sampler: [A-Za-z+ 0-9]*, Schedule type: Normal, CFG scale: 7.5, Seed: 5, Size: 64x64," "$png"
check "the sdbatch chunk too" grep -aq '"steps":20,"guidance_scale":7.5,' "$png"

# A size left to the model is checked against the limits once it is known.
DEFAULTS='{ steps: 1 }' write_conf 'limits: { width: 256, height: 256 }'
"$BIN" run --config "$CONF" -p "too big" -o big.png > /dev/null 2> big.err; rc=$?
check "the model's 512 over a limit of 256: exit 65 (got $rc)" [ $rc -eq 65 ]
check "the message names the field and the limit" grep -q "width: 512 is out of range (64..256) (the model.s default; give width" big.err
check "no PNG" [ ! -e big.png ]
job m2 'prompt: "too big"'
"$BIN" watch --once --config "$CONF" "$SPOOL" 2> /dev/null
check "in a spool: failed, blaming width" grep -q '"field": "width"' "$SPOOL/failed/m2.json"

# auto over a configured default; flags and a job file agree.
DEFAULTS='{ width: 64, height: 64, steps: 2 }' write_conf
"$BIN" run --config "$CONF" -p "auto" --seed 1 --steps auto -o auto.png > /dev/null 2> auto.err; rc=$?
check "--steps auto: the model's 20 over the configured 2 (exit $rc)" grep -aq "Steps: 20," auto.png
cat > job.yaml <<EOT
prompt: "a blue ball"
negative_prompt: "blurry"
seed: 9
steps: 3
guidance_scale: 3.5
sampler: ddim
prediction: epsilon
spacing: trailing
clip_skip: 2
EOT
"$BIN" run --config "$CONF" -o file.png job.yaml > /dev/null 2> file.err; rc=$?
check "a job file with prediction and spacing runs (exit $rc)" [ $rc -eq 0 ]
[ $rc -eq 0 ] || sed 's/^/# /' file.err
"$BIN" run --config "$CONF" -p "a blue ball" -n blurry --seed 9 --steps 3 --guidance 3.5 \
    --sampler ddim --prediction epsilon --spacing trailing --clip-skip 2 -o flags.png > /dev/null 2>&1
check "the same job by flags makes the same PNG, metadata included" cmp -s file.png flags.png
check "which says so" grep -aq '"prediction":"epsilon","spacing":"trailing"' flags.png
"$BIN" run --config "$CONF" -p x --spacing even 2> sp.err; rc=$?
check "--spacing even: exit 64 naming the choices (got $rc)" [ $rc -eq 64 ] && \
    grep -q -- "--spacing: unknown value \"even\" (one of: auto, leading, linspace, trailing)" sp.err
finish
