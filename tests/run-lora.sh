#!/bin/sh
# run-lora.sh: LoRA and A1111's prompt syntax end to end: `sdbatch run` with
# --lora (one, two at other scales, img2img) and with an a1111-syntax prompt
# (weights, a long prompt in two chunks, BREAK) writes diffusers' PNG within
# one level of 255; <lora:NAME:SCALE> is found in the configured lora_dirs;
# the PNG carries A1111's Lora hashes; `sdbatch info` describes a LoRA; a
# LoRA for another model is a clear error; a job with two LoRAs and a BREAK
# prompt renders through a spool; A1111's syntax on SDXL renders (diffusers'
# images when the prompt has no weights); warnings (a LoRA that matches in
# part, a plain prompt cut) reach a spool job's log and result record.
set -u
bin=${SDBATCH_BIN:-src/sdbatch}
shared=${SDBATCH_SHARED:-../shared}
pngcmp=${PNGCMP:-tests/pngcmp}
streplace=${STREPLACE:-tests/streplace}
td=$shared/testdata/sd15-tiny
if [ ! -d "$td/lora" ]; then
	echo "1..0 # SKIP ../shared has no LoRA test data"
	exit 0
fi
tmp=$(mktemp -d /tmp/sdbatch-lora.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
td=$(cd "$td" && pwd)
n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

prompt="a photo of an astronaut riding a horse on mars"
negative="blurry, low quality"
tok=$(cd "$shared/data/clip-tokenizer" && pwd)
model=$td/model.safetensors
attn=$td/lora/lora_attn_r4.safetensors
full=$td/lora/lora_te_unet_locon_r8.safetensors
f32=$td/lora/lora_attn_r8_f32.safetensors

# check CASE SAMPLER STEPS SEED [ARGS...]: a 128x64 run equals the case's image
check() {
	case=$1 sampler=$2 steps=$3 seed=$4
	shift 4
	out="$tmp/$case.png"
	if ! "$bin" run --quiet --progress none --model "${MODEL:-$model}" --tokenizer "$tok" \
	    --prompt "${PROMPT:-$prompt}" --negative "${NEGATIVE:-$negative}" --sampler "$sampler" \
	    --steps "$steps" --guidance 7.5 --seed "$seed" --width 128 --height 64 \
	    -o "$out" "$@" > "$tmp/stdout" 2> "$tmp/stderr"; then
		notok "$case: sdbatch run failed: $(tail -1 "$tmp/stderr")"
		return
	fi
	if msg=$("$pngcmp" "$out" "$case" image_u8); then
		ok "$case: the PNG equals diffusers' image ($msg)"
	else
		notok "$case: $msg"
	fi
}

check lora_t2i_attn_r4_s1_ddim_s4_64x128 ddim 4 7100 --lora "$attn"
check lora_t2i_attn_r4_s05_euler_a_s4_64x128 euler_a 4 7110 --lora "$attn:0.5"
check lora_t2i_full_r8_s07_dpmpp2m_s4_64x128 dpmpp_2m 4 7120 --lora "$full:0.7"
check lora_t2i_two_adapters_s05_ddim_s4_64x128 ddim 4 7140 --lora "$attn:0.4" --lora "$full:-0.3"
check lora_t2i_attn_r8_f32_s1_euler_s4_64x128 euler 4 7150 --lora "$f32:1"
check lora_img2img_full_r8_fused08_ddim_s8_str06_64x128 ddim 8 7200 --lora "$full:0.8" \
    --init-image "$td/goldens/lora_img2img_full_r8_fused08_ddim_s8_str06_64x128_init.png" --strength 0.6

# A1111's Lora hashes: the sha256 of the file after its header, 12 digits.
hlen=$(od -An -tu8 -N8 "$attn" | tr -d ' ')
hash=$(tail -c +$((hlen + 9)) "$attn" | sha256sum | cut -c1-12)
p="$tmp/lora_t2i_two_adapters_s05_ddim_s4_64x128.png"
fhash=$(tail -c +$(($(od -An -tu8 -N8 "$full" | tr -d ' ') + 9)) "$full" | sha256sum | cut -c1-12)
if grep -aq "Lora hashes: \"lora_attn_r4: $hash, lora_te_unet_locon_r8: $fhash\", Version: sdbatch" "$p"; then
	ok "the PNG text has A1111's Lora hashes ($hash, $fhash)"
else
	notok "the PNG text has A1111's Lora hashes: $(grep -ao 'Lora hashes[^V]*' "$p")"
fi
if grep -aq '"loras":\[{"file":"[^"]*lora_attn_r4.safetensors","scale":0.4[0-9]*},{"file":"[^"]*lora_te_unet_locon_r8.safetensors","scale":-0.3' "$p"; then
	ok "the sdbatch chunk lists the LoRAs and scales"
else
	notok "the sdbatch chunk lists the LoRAs: $(grep -ao '"loras":[^]]*]' "$p")"
fi

# A1111's prompt syntax; the a1111 cases' text encoder has another final
# LayerNorm (see the set's README).
long="a very highly detailed oil painting of an ancient stone lighthouse standing on a rocky cliff above a stormy sea at dusk, dramatic clouds, crashing waves, seagulls circling the lantern room, warm glowing windows, wet rocks reflecting the light, a small wooden boat struggling against the swell, spray in the air, cinematic lighting, volumetric fog, masterpiece, trending on artstation, oil on canvas, golden hour, rim light, by a renowned maritime painter, museum quality"
if "$streplace" "$tmp/a1111.safetensors" "$model" "$td/a1111/final_layer_norm.safetensors"; then
	MODEL=$tmp/a1111.safetensors PROMPT="a (red:1.3) car on a [wet] road" \
	    NEGATIVE="a [[blurry]] photo of a (dog:0.5) and a ((cat:1.5)) in a (garden)" \
	    check a1111_t2i_emphasis_ddim_s4_64x128 ddim 4 7300 --prompt-syntax a1111

	MODEL=$tmp/a1111.safetensors PROMPT="$long" NEGATIVE="a castle on a hill BREAK a dragon in the sky" \
	    check a1111_t2i_long_break_euler_a_s4_64x128 euler_a 4 7310 --prompt-syntax a1111
	p="$tmp/a1111_t2i_emphasis_ddim_s4_64x128.png"
	if grep -aq "parameters.a (red:1.3) car on a \[wet\] road" "$p" && grep -aq '"prompt_syntax":"a1111"' "$p"; then
		ok "the PNG keeps the prompt as written, and the syntax"
	else
		notok "the PNG keeps the prompt as written"
	fi
	# plain: the long prompt is cut, with a warning
	"$bin" run --progress none --model "$tmp/a1111.safetensors" --tokenizer "$tok" --prompt "$long" \
	    --steps 1 --width 64 --height 64 -o "$tmp/cut.png" > /dev/null 2> "$tmp/cut.err"
	if grep -q "warning: the prompt is [0-9]* tokens long: the text encoder reads the first 75" "$tmp/cut.err"; then
		ok "plain syntax: a prompt over 77 tokens warns that it was cut"
	else
		notok "plain syntax: no warning for a long prompt: $(cat "$tmp/cut.err")"
	fi
else
	notok "streplace: the a1111 model"
fi

# <lora:NAME:SCALE> in the prompt, NAME in the configured lora_dirs.
printf 'lora_dirs: [%s]\n' "$td/lora" > "$tmp/conf.yaml"
PROMPT="$prompt <lora:lora_attn_r4:1>" check lora_t2i_attn_r4_s1_ddim_s4_64x128 ddim 4 7100 \
    --prompt-syntax a1111 --config "$tmp/conf.yaml"
PROMPT="$prompt <lora:lora_attn_r4:0.4> <lora:lora_te_unet_locon_r8:-0.3>" \
    check lora_t2i_two_adapters_s05_ddim_s4_64x128 ddim 4 7140 --prompt-syntax a1111 --config "$tmp/conf.yaml"
"$bin" run --config "$tmp/conf.yaml" --model "$model" --tokenizer "$tok" --prompt "x <lora:nothere:1>" \
    --prompt-syntax a1111 --steps 1 --width 64 --height 64 -o "$tmp/x.png" > /dev/null 2> "$tmp/err"; rc=$?
if [ "$rc" -eq 66 ] && grep -q "<lora:nothere>: no nothere.safetensors in the lora_dirs ($td/lora)" "$tmp/err"; then
	ok "an unknown <lora:NAME>: exit 66, says where it looked"
else
	notok "an unknown <lora:NAME>: exit $rc: $(cat "$tmp/err")"
fi
"$bin" run --config "$tmp/conf.yaml" --model "$model" --tokenizer "$tok" --prompt "x <lora:../lora/x:1>" \
    --prompt-syntax a1111 --steps 1 --width 64 --height 64 -o "$tmp/x.png" > /dev/null 2> "$tmp/err"; rc=$?
if [ "$rc" -eq 65 ] && grep -q "may not contain '/'" "$tmp/err"; then
	ok "<lora:NAME> may not name a path: exit 65"
else
	notok "<lora:NAME> with a path: exit $rc: $(cat "$tmp/err")"
fi

# A LoRA for another model, and a file that is no LoRA.
"$bin" run --model "$model" --tokenizer "$tok" --prompt x --steps 1 --width 64 --height 64 \
    --lora "$model" -o "$tmp/x.png" > /dev/null 2> "$tmp/err"; rc=$?
if [ "$rc" -eq 65 ] && grep -q "LoRA $model: tensor \".*\" is not a LoRA weight" "$tmp/err"; then
	ok "a model given as a LoRA: exit 65, names the file"
else
	notok "a model given as a LoRA: exit $rc: $(cat "$tmp/err")"
fi
# (sd21-tiny with the LDM config that gives its head sizes, as test_pipeline does)
cp "$shared/testdata/sd21-tiny/model.safetensors" "$tmp/sd2.safetensors"
printf 'model:\n  params:\n    parameterization: "v"\n    unet_config:\n      params:\n        num_head_channels: 8\n        use_linear_in_transformer: True\n    cond_stage_config:\n      params:\n        layer: "penultimate"\n        heads: 2\n' > "$tmp/sd2.yaml"
"$bin" run --model "$tmp/sd2.safetensors" --tokenizer "$tok" --prompt x --steps 1 \
    --width 64 --height 64 --lora "$attn" -o "$tmp/x.png" > /dev/null 2> "$tmp/err"; rc=$?
if [ "$rc" -eq 65 ] && grep -q "LoRA $attn does not fit this model" "$tmp/err"; then
	ok "an SD 1.x LoRA on an SD 2.x model: exit 65 ($(cut -c1-150 "$tmp/err"))"
else
	notok "an SD 1.x LoRA on an SD 2.x model: exit $rc: $(cat "$tmp/err")"
fi
"$bin" run --model "$model" --tokenizer "$tok" --prompt x --lora "$tmp/none.safetensors" -o "$tmp/x.png" \
    > /dev/null 2> "$tmp/err"; rc=$?
[ "$rc" -eq 66 ] && ok "a missing LoRA file: exit 66" || notok "a missing LoRA file: exit $rc: $(cat "$tmp/err")"

# sdbatch info on a LoRA.
out=$("$bin" info "$full")
if echo "$out" | grep -q "format:        kohya" && echo "$out" | grep -q "layers:        248 (UNet 236, text encoder 12; 44 k x k convolutions)" &&
    echo "$out" | grep -q "rank:          4 to 8" && echo "$out" | grep -q "hash:          $fhash"; then
	ok "info describes a LoRA"
else
	notok "info describes a LoRA: $out"
fi
out=$("$bin" info --json "$attn")
echo "$out" | grep -q '"type":"lora","format":"kohya","layers":128' && echo "$out" | grep -q '"alpha":3' &&
    ok "info --json on a LoRA" || notok "info --json on a LoRA: $out"

# A1111's syntax on SDXL (sdxl-tiny's diffusers folder): a prompt without
# weights or BREAK gives the plain conditioning, so diffusers' image, with a
# negative prompt and without one (zeros: force_zeros_for_empty_prompt).
xl=$shared/testdata/sdxl-tiny
if [ -d "$xl/diffusers" ]; then
	xl=$(cd "$xl" && pwd)
	# xlcheck CASE OUT [ARGS...]: the run's PNG equals the case's image
	xlcheck() {
		xcase=$1 xout=$2
		shift 2
		if "$bin" run --quiet --progress none --model "$xl/diffusers" --prompt "$prompt" \
		    --prompt-syntax a1111 -o "$tmp/$xout.png" "$@" > /dev/null 2> "$tmp/err" &&
		    msg=$("$pngcmp" "$tmp/$xout.png" "sdxl-tiny/$xcase" image_u8); then
			ok "SDXL a1111 $xout: diffusers' image ($msg)"
		else
			notok "SDXL a1111 $xout: $(cat "$tmp/err") ${msg:-}"
		fi
	}
	xlcheck txt2img_euler_s4 xl-negative --negative "$negative" --sampler euler --steps 4 \
	    --guidance 5 --seed 1000 --width 128 --height 128
	xlcheck txt2img_dpmpp2m_karras_s6 xl-zeros --sampler dpmpp_2m --schedule karras --steps 6 \
	    --guidance 7 --seed 1020 --width 128 --height 128
	# weights and BREAK render (two chunks beside a one-chunk negative)
	if "$bin" run --quiet --progress none --model "$xl/diffusers" --sampler euler --steps 2 \
	    --prompt "a (red:1.3) robot [on] mars BREAK an oil painting" --negative "blurry" \
	    --seed 1 --width 64 --height 64 --prompt-syntax a1111 -o "$tmp/xl-break.png" > /dev/null 2> "$tmp/err" &&
	    [ -s "$tmp/xl-break.png" ] && "$bin" run --quiet --progress none --model "$xl/diffusers" \
	    --sampler euler --steps 2 --prompt "a red robot on mars an oil painting" --negative "blurry" \
	    --seed 1 --width 64 --height 64 -o "$tmp/xl-plain.png" > /dev/null 2>> "$tmp/err" &&
	    ! "$pngcmp" --same "$tmp/xl-break.png" "$tmp/xl-plain.png" > /dev/null 2>&1 &&
	    grep -aq "parameters.a (red:1.3) robot \[on\] mars BREAK an oil painting" "$tmp/xl-break.png"; then
		ok "SDXL a1111 with weights and BREAK renders (another image than plain's; the PNG keeps the prompt)"
	else
		notok "SDXL a1111 with weights and BREAK: $(cat "$tmp/err")"
	fi
fi

# sdbatch bench --lora-rank: a random LoRA made for the model, its merge timed.
out=$("$bin" bench --model "$model" --lora-rank 4 --steps 2 --json -q 2> "$tmp/err")
if echo "$out" | grep -q '"lora":"random","lora_layers":204,"lora_merge_s":[0-9.e-]*,' &&
    echo "$out" | grep -q '"lora_merges_s":\[[0-9.e-]*,[0-9.e-]*\],"lora_merged_tensors":204,'; then
	ok "bench --lora-rank 4: 204 layers merged, timed twice"
else
	notok "bench --lora-rank: $out $(cat "$tmp/err")"
fi
"$bin" bench --model "$model" --lora "$attn" --steps 1 -q > "$tmp/out" 2> "$tmp/err" &&
    grep -q "^LoRA merge:     best [0-9.]* s (CPU [0-9.]* s), median [0-9.]* s of 1; 128 tensors" "$tmp/out" &&
    ok "bench --lora FILE: $(grep 'LoRA merge' "$tmp/out")" || notok "bench --lora FILE: $(cat "$tmp/out" "$tmp/err")"

# Through a spool: two LoRAs (one by <lora:>) and a BREAK prompt.
mkdir -p "$tmp/spool/incoming" "$tmp/spool/tmp"
cat > "$tmp/spool.yaml" <<EOF
model: $model
tokenizer: $tok
threads: 1
lora_dirs: $td/lora
EOF
cat > "$tmp/spool/tmp/two.yaml" <<EOF
prompt: "a castle on a hill BREAK a (dragon:1.2) in the sky <lora:lora_te_unet_locon_r8:-0.3>"
negative_prompt: "blurry"
prompt_syntax: a1111
loras:
  - { file: $attn, scale: 0.4 }
width: 64
height: 64
steps: 2
sampler: euler_a
seed: 5
EOF
mv "$tmp/spool/tmp/two.yaml" "$tmp/spool/incoming/two.yaml"
OMP_NUM_THREADS=1 "$bin" watch --once --config "$tmp/spool.yaml" "$tmp/spool" 2> "$tmp/watch.err"
png=$(ls "$tmp"/spool/output/two/*.png 2>/dev/null | head -1)
if [ -f "$tmp/spool/done/two.json" ] && [ -n "$png" ] &&
    grep -aq "parameters.a castle on a hill BREAK a (dragon:1.2) in the sky <lora:lora_te_unet_locon_r8:-0.3>" "$png" &&
    grep -aq "Lora hashes: \"lora_attn_r4: $hash, lora_te_unet_locon_r8: $fhash\"" "$png"; then
	ok "a spool job with two LoRAs and a BREAK prompt is done; its PNG has the prompt and both hashes"
else
	notok "a spool job with two LoRAs and BREAK: $(cat "$tmp/watch.err" "$tmp"/spool/failed/two.json 2>/dev/null | head -5)"
fi

# A1111's syntax on SD 2.x: its OpenCLIP pads with 0 after the end of the
# text (A1111's process_tokens), as diffusers' tokenizer does: the same image.
sd2=$shared/testdata/sd21-tiny
if [ -d "$sd2/diffusers" ]; then
	if "$bin" run --quiet --progress none --model "$sd2/diffusers" --prompt "$prompt" \
	    --negative "$negative" --prompt-syntax a1111 --sampler ddim --steps 4 --guidance 7.5 \
	    --seed 1000 --width 128 --height 128 -o "$tmp/sd2-a1111.png" > /dev/null 2> "$tmp/err" &&
	    msg=$("$pngcmp" "$tmp/sd2-a1111.png" sd21-tiny/txt2img_v_ddim_s4 image_u8); then
		ok "SD 2.x a1111 without weights: diffusers' image ($msg)"
	else
		notok "SD 2.x a1111 without weights: $(cat "$tmp/err") ${msg:-}"
	fi
fi

# Warnings in the spool: a LoRA whose layers match in part (one layer of
# the model, one of no model: a safetensors file written here) and a plain
# prompt cut at 77 tokens go to stderr, the progress log and the record.
le64() {
	_n=$1 _i=0
	while [ "$_i" -lt 8 ]; do
		printf "\\$(printf '%03o' $((_n & 255)))"
		_n=$((_n >> 8)) _i=$((_i + 1))
	done
}
k1=lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k
k2=lora_unet_down_blocks_9_attentions_0_transformer_blocks_0_attn1_to_k
hdr="{\"$k1.lora_down.weight\":{\"dtype\":\"F32\",\"shape\":[1,32],\"data_offsets\":[0,128]},\"$k1.lora_up.weight\":{\"dtype\":\"F32\",\"shape\":[32,1],\"data_offsets\":[128,256]},\"$k2.lora_down.weight\":{\"dtype\":\"F32\",\"shape\":[1,32],\"data_offsets\":[256,384]},\"$k2.lora_up.weight\":{\"dtype\":\"F32\",\"shape\":[32,1],\"data_offsets\":[384,512]}}"
{ le64 ${#hdr}; printf '%s' "$hdr"; head -c 512 /dev/zero; } > "$tmp/partial.safetensors"
cat > "$tmp/spool/tmp/warn.yaml" <<EOF
prompt: "$long"
loras: [$tmp/partial.safetensors]
width: 64
height: 64
steps: 1
count: 2
EOF
mv "$tmp/spool/tmp/warn.yaml" "$tmp/spool/incoming/warn.yaml"
OMP_NUM_THREADS=1 "$bin" watch --once --config "$tmp/spool.yaml" "$tmp/spool" 2> "$tmp/watch.err"
log=$tmp/spool/logs/warn.jsonl
rec=$tmp/spool/done/warn.json
if [ -f "$rec" ] && grep -q "warning: LoRA $tmp/partial.safetensors: 1 of its 2 layers match no layer of this model (the first: $k2)" "$tmp/watch.err" &&
    grep -q "warning: the prompt is [0-9]* tokens long" "$tmp/watch.err"; then
	ok "spool warnings: the worker prints both on stderr"
else
	notok "spool warnings on stderr: $(cat "$tmp/watch.err" "$tmp"/spool/failed/warn.json 2>/dev/null | head -5)"
fi
if [ "$(grep -c '"event":"warning"' "$log" 2>/dev/null)" = 2 ] &&
    grep -q '"event":"warning".*"message":"LoRA [^"]*partial.safetensors: 1 of its 2 layers match no layer' "$log" &&
    grep -q '"event":"warning".*"message":"the prompt is [0-9]* tokens long: the text encoder reads the first 75' "$log"; then
	ok "spool warnings: two warning events in the progress log (once, not per image)"
else
	notok "spool warnings in the log: $(grep warning "$log" 2>/dev/null)"
fi
if tr -d '\n' < "$rec" | grep -q '"warnings": \[ *"LoRA [^"]*partial.safetensors: 1 of its 2 layers[^"]*", *"the prompt is [0-9]* tokens long[^"]*" *\]'; then
	ok "spool warnings: the result record lists them"
else
	notok "spool warnings in the record: $(grep -A4 warnings "$rec" 2>/dev/null)"
fi
if ! grep -q '"warnings"' "$tmp/spool/done/two.json"; then
	ok "a job without a warning has no warnings list"
else
	notok "a job without a warning has a warnings list"
fi

echo "1..$n"
[ "$fails" -eq 0 ]
