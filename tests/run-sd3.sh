#!/bin/sh
# run-sd3.sh: `sdbatch run` end to end on SD3: the PNG it writes equals the
# image diffusers made (within one level of 255 per value), from the single
# file (F32 and F16; a config beside it gives the tiny model's head counts,
# real SD3 files need none; the T5 tokenizer beside it in tokenizer_3/), from
# the diffusers folder, with and without T5 (--no-t5, and a folder without
# text_encoder_3/), with the text encoders from another folder
# (--text-encoders), txt2img and img2img; then what a user gets wrong.
set_name=sd3-tiny
. "$(dirname "$0")/run-lib.sh"
td=$(cd "$td" && pwd)	# the symlinks below point into it

heads='model:
  params:
    network_config:
      params:
        num_heads: 4
    text_encoders:
      clip_l:
        heads: 3
      clip_g:
        heads: 5
'
mkdir "$tmp/file"
for f in model model-f16; do
	cp "$td/$f.safetensors" "$tmp/file/sd3_tiny_$f.safetensors"
	printf '%s' "$heads" > "$tmp/file/sd3_tiny_$f.yaml"
done
ln -s "$td/diffusers/tokenizer_3" "$tmp/file/tokenizer_3"
# the folder without T5 (as saved with text_encoder_3=None)
mkdir "$tmp/noT5"
for d in transformer vae text_encoder text_encoder_2 tokenizer tokenizer_2 scheduler; do
	ln -s "$td/diffusers/$d" "$tmp/noT5/$d"
done
sed 's/"text_encoder_3": \[[^]]*\]/"text_encoder_3": [null, null]/; s/"tokenizer_3": \[[^]]*\]/"tokenizer_3": [null, null]/' \
    "$td/diffusers/model_index.json" > "$tmp/noT5/model_index.json"
# the text encoders as SD3's repository ships them
mkdir "$tmp/encoders"
ln -s "$td/diffusers/text_encoder/model.safetensors" "$tmp/encoders/clip_l.safetensors"
ln -s "$td/diffusers/text_encoder_2/model.safetensors" "$tmp/encoders/clip_g.safetensors"
ln -s "$td/diffusers/text_encoder_3/model.safetensors" "$tmp/encoders/t5xxl_fp16.safetensors"

file="$tmp/file/sd3_tiny_model.safetensors"
file16="$tmp/file/sd3_tiny_model-f16.safetensors"


check_png txt2img_s4_g7_128x128 "$file" --tokenizer "$tok" --steps 4 --guidance 7 --seed 1000 \
    --width 128 --height 128
check_png txt2img_s4_g7_128x128_f16w "$file16" --tokenizer "$tok" --steps 4 --guidance 7 --seed 1000 \
    --width 128 --height 128
check_png txt2img_s4_noT5_96x96 "$file" --tokenizer "$tok" --no-t5 --steps 4 --guidance 5 --seed 1003 \
    --width 96 --height 96
check_png txt2img_s4_noT5_96x96 "$tmp/noT5" --steps 4 --guidance 5 --seed 1003 --width 96 --height 96
check_png txt2img_s5_neg_128x64 "$td/diffusers" --negative "blurry, low quality" --steps 5 \
    --guidance 4.5 --seed 1002 --width 64 --height 128
check_png txt2img_s6_nocfg_64x128 "$file" --tokenizer "$tok" --text-encoders "$tmp/encoders" --steps 6 \
    --guidance 1 --seed 1001 --width 128 --height 64
check_png txt2img_s10_g3_64x64 "$td/diffusers" --steps 10 --guidance 3 --seed 1004 --width 64 --height 64
check_png img2img_s10_str075 "$file" --tokenizer "$tok" --steps 10 --guidance 7 --seed 1100 \
    --width 128 --height 128 --init-image "$td/goldens/img2img_s10_str075_init.png" --strength 0.75
check_png img2img_s6_str05_nocfg_64x128 "$td/diffusers" --steps 6 --guidance 1 --seed 1101 --width 128 \
    --height 64 --init-image "$td/goldens/img2img_s6_str05_nocfg_64x128_init.png" --strength 0.5

# info names SD3, its prediction and defaults
if "$bin" info "$td/diffusers" > "$tmp/info" 2>&1 && grep -q "Stable Diffusion 3" "$tmp/info" &&
    grep -qi "flow" "$tmp/info"; then
	ok "info names SD3 and flow matching"
else
	notok "info on SD3: $(cat "$tmp/info")"
fi

# errors a user meets, each naming the problem
expect_fail() {	# expect_fail WHAT PATTERN args...
	what=$1 pat=$2
	shift 2
	if "$bin" run --quiet --progress none --prompt "$prompt" -o "$tmp/x.png" "$@" > "$tmp/stdout" \
	    2> "$tmp/stderr"; then
		notok "$what: sdbatch run succeeded"
	elif grep -qi -- "$pat" "$tmp/stderr"; then
		ok "$what: $(head -c 200 "$tmp/stderr")"
	else
		notok "$what: the message does not say \"$pat\": $(cat "$tmp/stderr")"
	fi
}
mkdir "$tmp/not-t5-tok"
cp "$file" "$tmp/not-t5-tok/sd3.safetensors"
printf '%s' "$heads" > "$tmp/not-t5-tok/sd3.yaml"
expect_fail "T5 weights but no T5 tokenizer" "spiece.model" --model "$tmp/not-t5-tok/sd3.safetensors" \
    --tokenizer "$tok" --steps 1 --width 64 --height 64
if "$bin" run --quiet --progress none --model "$tmp/not-t5-tok/sd3.safetensors" --tokenizer "$tok" \
    --no-t5 --prompt "$prompt" --steps 4 --guidance 5 --seed 1003 --width 96 --height 96 \
    -o "$tmp/noT5b.png" > /dev/null 2> "$tmp/stderr" &&
    msg=$("$pngcmp" "$tmp/noT5b.png" "sd3-tiny/txt2img_s4_noT5_96x96" image_u8); then
	ok "no T5 tokenizer but --no-t5: renders diffusers' image without T5 ($msg)"
else
	notok "no T5 tokenizer but --no-t5: $(cat "$tmp/stderr") ${msg:-}"
fi
expect_fail "prediction epsilon on SD3" "flow" --model "$td/diffusers" --prediction epsilon --steps 1 \
    --width 64 --height 64
expect_fail "a size past the position table" "pos" --model "$td/diffusers" --steps 1 --width 256 \
    --height 256
expect_fail "inpainting on SD3" "inpaint" --model "$td/diffusers" --steps 1 --width 64 --height 64 \
    --init-image "$td/goldens/img2img_s10_str075_init.png" --mask "$td/goldens/img2img_s10_str075_init.png"
expect_fail "--text-encoders without the CLIP files" "clip_l" --model "$td/diffusers" \
    --text-encoders "$tmp/not-t5-tok" --steps 1 --width 64 --height 64
# --tokenizer DIR holding tokenizer/, tokenizer_2/ and tokenizer_3/ (the
# folder's): the file with no tokenizer beside it
check_png txt2img_s4_g7_128x128 "$tmp/not-t5-tok/sd3.safetensors" --tokenizer "$td/diffusers" --steps 4 \
    --guidance 7 --seed 1000 --width 128 --height 128

# a prompt longer than T5's 256 tokens: a warning says it was cut
long=""
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40; do
	long="$long a red cube on a blue table"
done
if "$bin" run --progress none --model "$td/diffusers" --prompt "$long" --steps 1 --width 64 --height 64 \
    -o "$tmp/long.png" > /dev/null 2> "$tmp/stderr" && grep -q "T5 tokens long" "$tmp/stderr"; then
	ok "a prompt past T5's 256 tokens warns: $(grep "T5 tokens" "$tmp/stderr")"
else
	notok "a prompt past T5's 256 tokens: $(cat "$tmp/stderr")"
fi

# the tiny file without the config of its heads
if "$bin" run --quiet --progress none --model "$td/model.safetensors" --tokenizer "$tok" --no-t5 \
    --prompt "$prompt" --steps 1 --width 64 --height 64 -o "$tmp/y.png" > /dev/null 2> "$tmp/stderr"; then
	notok "a file without its heads' config renders with the wrong heads"
else
	ok "the tiny file without its config fails cleanly: $(head -c 160 "$tmp/stderr")"
fi

run_done
