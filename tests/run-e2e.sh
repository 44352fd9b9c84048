#!/bin/sh
# run-e2e.sh: `sdbatch run` end to end: the PNG it writes equals the image
# diffusers made for the same model, prompt, seed and sampler (within one
# level of 255 per value), for txt2img, img2img and inpainting, with both
# checkpoint layouts; the PNG carries the parameters text chunk.
set_name=sd15-tiny
. "$(dirname "$0")/run-lib.sh"
here=$(cd "$(dirname "$0")" && pwd)

negative="blurry, low quality"

# case model sampler schedule steps guidance seed width height [extra args...]
check() {
	case=$1 model=$2 sampler=$3 schedule=$4 steps=$5 guidance=$6 seed=$7 w=$8 h=$9
	shift 9
	out="$tmp/$case.png"
	if ! "$bin" run --quiet --progress none --model "$model" --tokenizer "$tok" \
	    --prompt "$prompt" --negative "$negative" --sampler "$sampler" --schedule "$schedule" \
	    --steps "$steps" --guidance "$guidance" --seed "$seed" --width "$w" --height "$h" \
	    -o "$out" "$@" > "$tmp/stdout" 2> "$tmp/stderr"; then
		notok "$case: sdbatch run failed: $(tail -1 "$tmp/stderr")"
		return
	fi
	if [ "$(cat "$tmp/stdout")" != "$out" ]; then
		notok "$case: stdout names the PNG ($(cat "$tmp/stdout"))"
		return
	fi
	if msg=$("$pngcmp" "$out" "$case" image_u8); then
		ok "$case: the PNG equals diffusers' image ($msg)"
	else
		notok "$case: $msg"
	fi
}

check txt2img_ddim_s4 "$td/model.safetensors" ddim normal 4 7.5 1000 128 128
check txt2img_euler_a_s4 "$td/diffusers" euler_a normal 4 7.5 1010 128 128
check txt2img_dpmpp2m_s8_64x128 "$td/model.safetensors" dpmpp_2m normal 8 7.5 1020 128 64
check txt2img_dpmpp2m_karras_s4_64x128 "$td/model.safetensors" dpmpp_2m karras 4 7.5 1040 128 64
check txt2img_pndm_s4_128x64 "$td/model.safetensors" pndm normal 4 7.5 1050 64 128
check txt2img_ddim_s4_f16w "$td/model-f16.safetensors" ddim normal 4 7.5 1000 128 128
check img2img_euler_a_s10_str075 "$td/model.safetensors" euler_a normal 10 7.5 3010 128 128 \
    --init-image "$td/goldens/img2img_euler_a_s10_str075_init.png" --strength 0.75
check inpaint4_ddim_s10_str08_64x128 "$td/model.safetensors" ddim normal 10 7.5 3120 128 64 \
    --init-image "$td/goldens/inpaint4_ddim_s10_str08_64x128_init.png" \
    --mask "$td/goldens/inpaint4_ddim_s10_str08_64x128_mask.png" --strength 0.8
check inpaint9_euler_a_s10_str1_64x128 "$td/model.safetensors" euler_a normal 10 7.5 3210 128 64 \
    --unet "$td/model-inpaint.safetensors" \
    --init-image "$td/goldens/inpaint9_euler_a_s10_str1_64x128_init.png" \
    --mask "$td/goldens/inpaint9_euler_a_s10_str1_64x128_mask.png" --strength 1

# The PNG says how it was made, in the form A1111 and sd.cpp read.
p="$tmp/txt2img_ddim_s4.png"
if [ -f "$p" ] && grep -a -q "Steps: 4, Sampler: DDIM" "$p" && grep -a -q "Seed: 1000" "$p" &&
    grep -a -q "Negative prompt: blurry, low quality" "$p"; then
	ok "the PNG has the parameters text chunk"
else
	notok "the PNG has the parameters text chunk"
fi

# Two images of one job: image i uses seed + i (the batch_seeds case).
if "$bin" run --quiet --progress none --model "$td/model.safetensors" --tokenizer "$tok" \
    --prompt "$prompt" --negative "$negative" --sampler euler_a --steps 4 --guidance 7.5 \
    --seed 3300 --count 2 --width 128 --height 64 -o "$tmp/batch-{index}.png" > "$tmp/stdout" 2> "$tmp/stderr"; then
	lines=$(wc -l < "$tmp/stdout")
	f0=$(sed -n 1p "$tmp/stdout") f1=$(sed -n 2p "$tmp/stdout")
	if [ "$lines" -eq 2 ] && m0=$("$pngcmp" "$f0" batch_seeds_euler_a_s4_64x128 img0.image_u8) &&
	    m1=$("$pngcmp" "$f1" batch_seeds_euler_a_s4_64x128 img1.image_u8); then
		ok "count 2: image 0 with seed 3300 ($m0), image 1 with seed 3301 ($m1)"
	else
		notok "count 2: two PNGs equal to diffusers' seeds 3300 and 3301 ($(cat "$tmp/stdout"))"
	fi
else
	notok "count 2: sdbatch run failed: $(tail -1 "$tmp/stderr")"
fi
run_done
