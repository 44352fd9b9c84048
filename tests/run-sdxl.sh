#!/bin/sh
# run-sdxl.sh: `sdbatch run` end to end on SDXL and SDXL-Turbo: the PNG it
# writes equals the image diffusers made (within one level of 255 per
# value), from the single file (an LDM config beside it gives the tiny
# model's 4-channel heads; real SDXL files need none) and from the diffusers
# folder (its tokenizer_2 pads with "!"), txt2img and img2img.
set_name=sdxl-tiny
. "$(dirname "$0")/run-lib.sh"

neg="blurry, low quality"
ldm() {	# ldm NAME
	cp "$td/model.safetensors" "$tmp/$1.safetensors"
	printf 'model:\n  params:\n    scale_factor: 0.13025\n    network_config:\n      params:\n        num_head_channels: 4\n' > "$tmp/$1.yaml"
}
ldm sd_xl_base_tiny
ldm sd_xl_turbo_tiny


check_png txt2img_euler_s4 "$tmp/sd_xl_base_tiny.safetensors" --tokenizer "$tok" --negative "$neg" \
    --sampler euler --steps 4 --guidance 5 --seed 1000 --width 128 --height 128
check_png txt2img_euler_s4 "$td/diffusers" --negative "$neg" --sampler euler --steps 4 --guidance 5 \
    --seed 1000 --width 128 --height 128
check_png txt2img_euler_a_s6_64x128 "$tmp/sd_xl_base_tiny.safetensors" --tokenizer "$tok" \
    --negative "$neg" --sampler euler_a --steps 6 --guidance 5 --seed 1010 --width 128 --height 64
check_png txt2img_ddim_s5_128x64 "$td/diffusers" --negative "" --sampler ddim --steps 5 --guidance 5 \
    --seed 1030 --width 64 --height 128
check_png turbo_euler_a_trailing_s1 "$tmp/sd_xl_turbo_tiny.safetensors" --tokenizer "$tok" \
    --sampler euler_a --steps 1 --guidance 0 --seed 1100 --width 128 --height 128
check_png turbo_euler_a_trailing_s4_64x128 "$tmp/sd_xl_turbo_tiny.safetensors" --tokenizer "$tok" \
    --sampler euler_a --steps 4 --guidance 0 --seed 1110 --width 128 --height 64
check_png img2img_euler_s10_str06 "$tmp/sd_xl_base_tiny.safetensors" --tokenizer "$tok" \
    --negative "$neg" --sampler euler --steps 10 --guidance 5 --seed 1200 --width 128 --height 128 \
    --init-image "$td/goldens/img2img_euler_s10_str06_init.png" --strength 0.6
check_png img2img_turbo_s2_str05_64x128 "$tmp/sd_xl_turbo_tiny.safetensors" --tokenizer "$tok" \
    --sampler euler_a --steps 2 --guidance 0 --seed 1210 --width 128 --height 64 \
    --init-image "$td/goldens/img2img_turbo_s2_str05_64x128_init.png" --strength 0.5

if "$bin" info "$tmp/sd_xl_turbo_tiny.safetensors" > "$tmp/info" 2>&1 &&
    grep -q "SDXL-Turbo" "$tmp/info" && grep -q "512x512, 1 step, guidance 0, euler_a" "$tmp/info"; then
	ok "info names SDXL-Turbo and its defaults"
else
	notok "info on SDXL-Turbo: $(cat "$tmp/info")"
fi

run_done
