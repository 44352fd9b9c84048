#!/bin/sh
# `sdbatch submit` (and so POST /v1/jobs, which shares its code) refuses what
# a worker could never run, with the worker's message, the field and the
# line: a size over the limits (given, or the model's default), a model that
# does not exist or is no model, no model at all, missing init images,
# masks and LoRA files, inputs outside the trust policy's input roots, an
# inpainting model without a mask.  What it accepts runs.  A job id that
# was used before never loses the earlier records: submit refuses it, and a
# job file dropped into incoming/ under that id keeps them as history.
TESTDIR=$(cd "$(dirname "$0")" && pwd)
. "$TESTDIR/spool-lib.sh"
setup
cd "$T" || exit 1
mkdir -p "$SPOOL" jobs
touch jobs/.keep

# submit_bad NAME YAML: submit must refuse it; its stderr in NAME.err
submit_bad() {
	printf '%s\n' "$2" > "jobs/$1.yaml"
	"$BIN" submit --config "$CONF" "$SPOOL" "jobs/$1.yaml" > "$1.out" 2> "$1.err"
	rc=$?
	[ -s "$1.err" ] && sed 's/^/# /' "$1.err"
}
nothing_queued() { [ -z "$(ls "$SPOOL/incoming" 2>/dev/null)" ]; }

TINY=$(cd "$TINY" && pwd)
SHARED=$(cd "$SHARED" && pwd)
DEFAULTS='{ steps: 1 }' write_conf 'limits: { width: 256, height: 256 }'

submit_bad wide 'prompt: a
width: 4096'
check "width over the limit: exit 65 (got $rc)" [ $rc -eq 65 ]
check "the message names the line, the field and the range" \
    grep -q "wide.yaml:2: width: 4096 is out of range (64..256)" wide.err

submit_bad odd 'prompt: a
height: 64
width: 100'
check "width not a multiple of 8: exit 65 (got $rc)" [ $rc -eq 65 ]
check "the message names the line and says what is wrong" \
    grep -q "odd.yaml:3: width: 100 is not a multiple of 8" odd.err

# The tiny model's default size is 512: over these limits.
submit_bad default 'prompt: a'
check "the model's default size over the limit: exit 65 (got $rc)" [ $rc -eq 65 ]
check "the message says it is the model's default" \
    grep -q "width: 512 is out of range (64..256) (the model's default; give width" default.err

write_conf
submit_bad nomodel "prompt: a
model: $T/nonexistent.safetensors"
check "a model that does not exist: exit 66 (got $rc)" [ $rc -eq 66 ]
check "the message names the line and the field" \
    grep -q "nomodel.yaml:2: model: \"$T/nonexistent.safetensors\" not found" nomodel.err

printf 'root:x:0:0:secret\n' > notamodel.safetensors
submit_bad notmodel "prompt: a
model: $T/notamodel.safetensors"
check "a file that is no model: exit 65 (got $rc)" [ $rc -eq 65 ]
check "the message names the field, not the file's bytes" \
    sh -c "grep -q 'notmodel.yaml:2: model: .*not a safetensors file' notmodel.err && ! grep -q secret notmodel.err"

submit_bad inpaint "prompt: a
model: $TINY/model-inpaint.safetensors"
check "an inpainting model without a mask: exit 65 (got $rc)" [ $rc -eq 65 ]
check "the message says so" grep -q "inpaint.yaml:2: model: this is an inpainting model" inpaint.err

submit_bad noinit 'prompt: a
init_image: street.png'
check "a missing init_image: exit 66 (got $rc)" [ $rc -eq 66 ]
check "the message names the line and the field" grep -q "noinit.yaml:2: init_image: .*street.png: no such file" noinit.err

"$BIN" run --config "$CONF" -p "an input" -W 64 -H 64 --steps 1 -o in.png > /dev/null 2>&1
check "an input image" [ -s in.png ]
submit_bad nomask "prompt: a
init_image: $T/in.png
mask: $T/mask.png"
check "a missing mask: exit 66 (got $rc)" [ $rc -eq 66 ]
check "the message names the line and the field" grep -q "nomask.yaml:3: mask: $T/mask.png: no such file" nomask.err

submit_bad nolora 'prompt: a
loras: [{ file: detail.safetensors, scale: 0.5 }]'
check "a missing LoRA file: exit 66 (got $rc)" [ $rc -eq 66 ]
check "the message names the line and the field" grep -q "nolora.yaml:2: loras: .*detail.safetensors: no such file" nolora.err

# No model in the job nor in the configuration.
cat > nomodel.conf <<EOF
tokenizer: $TOKENIZER
EOF
printf 'prompt: a\n' > jobs/none.yaml
"$BIN" submit --config nomodel.conf "$SPOOL" jobs/none.yaml > none.out 2> none.err; rc=$?
sed 's/^/# /' none.err
check "no model given nor configured: exit 66 (got $rc)" [ $rc -eq 66 ]
check "the message says how to give one" grep -q "model: no model given (set it in the job, with --model or in the configuration)" none.err

# Inputs outside the trust policy's input roots: the worker's message,
# whether the file exists or not.
mkdir -p inputs
POLICY="policy: { input_roots: [$T/inputs, $SHARED] }" write_conf
submit_bad outside "prompt: a
width: 64
height: 64
init_image: $T/in.png"
check "an init_image outside the input roots: exit 65 (got $rc)" [ $rc -eq 65 ]
check "the message names the policy" grep -q "outside.yaml:4: init_image: $T/in.png is outside the configuration's input roots (policy.input_roots)" outside.err
submit_bad outside2 "prompt: a
width: 64
height: 64
init_image: $T/nothere.png"
check "the same answer for a file that does not exist (got $rc)" \
    sh -c "[ $rc -eq 65 ] && grep -q 'is outside the configuration.s input roots' outside2.err"

# A flow-matching model (SD3): the engine's rules for it.
SD3=$SHARED/testdata/sd3-tiny/model.safetensors
if [ -f "$SD3" ]; then
	submit_bad sd3eps "prompt: a
model: $SD3
width: 64
height: 64
prediction: epsilon"
	check "SD3 with prediction epsilon: exit 65 (got $rc)" [ $rc -eq 65 ]
	check "the engine's message, with the line" \
	    grep -q "sd3eps.yaml:5: prediction: .* is a flow-matching model: prediction must be auto or flow" sd3eps.err
	printf 'prompt: a\nmodel: %s\nwidth: 64\nheight: 64\nsteps: 2\nsampler: euler\n' "$SD3" > jobs/sd3ok.yaml
	"$BIN" submit --config "$CONF" "$SPOOL" jobs/sd3ok.yaml > sd3ok.out 2> sd3ok.err; rc=$?
	[ $rc -eq 0 ] || sed "s/^/# /" sd3ok.err
	check "an SD3 job it can run (euler) is queued (got $rc)" [ $rc -eq 0 ]
	rm -f "$SPOOL/incoming/sd3ok.yaml"
else
	diag "no sd3-tiny: the flow-matching rules not checked"
fi

# What submit accepts runs.
write_conf
cp in.png inputs/street.png
submit_bad nostep "prompt: a
width: 64
height: 64
steps: 1
init_image: $T/in.png
strength: 0.5"
check "img2img with no step left: exit 65 (got $rc)" [ $rc -eq 65 ]
check "the engine's message, with the line" grep -q "nostep.yaml:6: strength: 0.5 with 1 steps leaves no step to run" nostep.err
submit_bad karras "prompt: a
width: 64
height: 64
sampler: ddim
schedule: karras"
check "a schedule the sampler does not have: exit 65 (got $rc)" [ $rc -eq 65 ]
check "the engine's message, with the line" grep -q "karras.yaml:5: schedule: karras is not available with sampler ddim" karras.err
check "nothing was queued by any refused job" nothing_queued
printf 'prompt: a street\nwidth: 72\nheight: 64\nsteps: 2\ninit_image: ../inputs/street.png\nstrength: 0.5\n' > jobs/good.yaml
cp -r inputs "$SPOOL/"
"$BIN" submit --config "$CONF" "$SPOOL" jobs/good.yaml > good.out 2> good.err; rc=$?
check "a job a worker can run is queued (got $rc)" [ $rc -eq 0 ] && [ "$(cat good.out)" = good ]
[ $rc -eq 0 ] || sed 's/^/# /' good.err
"$BIN" watch --once --config "$CONF" "$SPOOL" 2> w1.err; rc=$?
check "and it is done (72 pixels wide, an input relative to the spool) (rc $rc)" in_state good done
in_state good done || sed 's/^/# /' w1.err

# Ids: submit refuses an id that has a record; a job file dropped under
# that id runs and the old record is kept as history.
"$BIN" submit --config "$CONF" "$SPOOL" jobs/good.yaml > again.out 2> again.err; rc=$?
check "submitting a used id again: exit 65 (got $rc)" [ $rc -eq 65 ]
check "the message says the id exists and how to give another" \
    grep -q "job good exists already (done); give another id with --id" again.err
cp "$SPOOL/done/good.json" good.before
job good 'prompt: the same id again
width: 64
height: 64
steps: 1'
"$BIN" watch --once --config "$CONF" "$SPOOL" 2> w2.err
check "a job dropped under a used id runs" grep -q "the same id again" "$SPOOL/done/good.yaml"
hist=$(ls "$SPOOL"/done/.history/good-*.json 2>/dev/null | head -1)
check "the earlier record is kept in done/.history/" [ -n "$hist" ] && cmp -s "$hist" good.before
check "with its job file" [ -n "$(ls "$SPOOL"/done/.history/good-*.yaml 2>/dev/null)" ]

# POST /v1/jobs goes through the same checks (when serve is built).
if command -v curl > /dev/null 2>&1 &&
    "$BIN" --version | grep -q "HTTP server (serve): built in"; then
	. "$TESTDIR/serve-lib.sh"
	DEFAULTS='{ steps: 1 }' write_conf 'limits: { width: 256, height: 256 }'
	if start_serve serve; then
		code=$(post_json '{"prompt": "a", "width": 64, "height": 64, "model": "/nonexistent/model.safetensors"}')
		check "POST with a model that does not exist: 422 (got $code)" [ "$code" = 422 ]
		check "naming the field" grep -q '"field": "model"' "$T/body"
		code=$(post_json '{"operation": {"type": "SDGenerate", "prompt": "a"}}')
		check "POST leaving the size to a model over the limits: 422 (got $code)" [ "$code" = 422 ]
		check "naming the field and the model's default" \
		    sh -c "grep -q '\"field\": \"operation.width\"' '$T/body' && grep -q \"the model's default\" '$T/body'"
		code=$(post_json '{"prompt": "a", "width": 64, "height": 64, "init_image": "nope.png"}')
		check "POST with a missing init_image: 422 (got $code)" [ "$code" = 422 ]
		code=$(post_json '{"prompt": "a", "width": 64, "height": 64}')
		check "POST of a job that can run: 202 (got $code)" [ "$code" = 202 ]
		stop_serve "$serve_pid"
	else
		not_ok "serve starts"
	fi
else
	diag "sdbatch serve is not built (or no curl): POST not checked"
fi

finish
