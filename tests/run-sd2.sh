#!/bin/sh
# run-sd2.sh: `sdbatch run` end to end on SD 2.x: the PNG it writes equals
# the image diffusers made (within one level of 255 per value) for the
# 768-v, base and SD-Turbo conventions, from the single file (with an LDM
# config beside it, as A1111 keeps one) and from the diffusers folder, with
# the model's own defaults where a case uses them.
set_name=sd21-tiny
. "$(dirname "$0")/run-lib.sh"


# The single file under the names users have (the tiny model has 8-channel
# heads, which its LDM config says; real SD 2.x files need none).  Copies,
# not links: sdbatch reads the config beside the real file.
abs=$(cd "$td" && pwd)
ldm() {	# ldm NAME PARAMETERIZATION
	cp "$abs/model.safetensors" "$tmp/$1.safetensors"
	printf 'model:\n  params:\n    parameterization: "%s"\n    unet_config:\n      params:\n        num_head_channels: 8\n    cond_stage_config:\n      params:\n        heads: 2\n' "$2" > "$tmp/$1.yaml"
}
ldm v2-1_768-tiny v
ldm v2-1_512-tiny eps
ldm sd_turbo-tiny eps


neg="blurry, low quality"
check_png txt2img_v_ddim_s4 "$tmp/v2-1_768-tiny.safetensors" --tokenizer "$tok" --negative "$neg" --sampler ddim \
    --steps 4 --guidance 7.5 --seed 1000 --width 128 --height 128
check_png txt2img_v_ddim_s4 "$td/diffusers" --tokenizer "$tok" --negative "$neg" --steps 4 --seed 1000 \
    --width 128 --height 128 --guidance 7.5 --sampler ddim
check_png txt2img_v_euler_a_s6_64x128 "$tmp/v2-1_768-tiny.safetensors" --tokenizer "$tok" --negative "$neg" \
    --sampler euler_a --steps 6 --guidance 7.5 --seed 1010 --width 128 --height 64
check_png txt2img_v_dpmpp2m_karras_s5_128x64 "$td/diffusers" --tokenizer "$tok" --sampler dpmpp_2m --schedule karras \
    --steps 5 --guidance 6 --seed 1020 --width 64 --height 128
check_png txt2img_base_pndm_s4 "$tmp/v2-1_512-tiny.safetensors" --tokenizer "$tok" --negative "$neg" --sampler pndm \
    --steps 4 --guidance 7.5 --seed 1100 --width 128 --height 128
check_png txt2img_turbo_euler_a_s1 "$tmp/sd_turbo-tiny.safetensors" --tokenizer "$tok" --seed 1200 --width 128 --height 128 \
    --steps 1 --guidance 0 --sampler euler_a
check_png txt2img_turbo_euler_a_s4 "$tmp/sd_turbo-tiny.safetensors" --tokenizer "$tok" --steps 4 --seed 1210 \
    --width 128 --height 128 --guidance 0 --sampler euler_a
check_png img2img_v_ddim_s10_str06 "$tmp/v2-1_768-tiny.safetensors" --tokenizer "$tok" --negative "$neg" \
    --sampler ddim --steps 10 --guidance 7.5 --seed 3000 --width 128 --height 128 \
    --init-image "$td/goldens/img2img_v_ddim_s10_str06_init.png" --strength 0.6
check_png img2img_turbo_euler_a_s2_str05 "$tmp/sd_turbo-tiny.safetensors" --tokenizer "$tok" --steps 2 --seed 3020 \
    --guidance 0 --sampler euler_a \
    --width 128 --height 128 --init-image "$td/goldens/img2img_turbo_euler_a_s2_str05_init.png" \
    --strength 0.5

# `info` names the variant and why.
if "$bin" info "$tmp/sd_turbo-tiny.safetensors" > "$tmp/info" 2>&1 &&
    grep -q "SD-Turbo" "$tmp/info" && grep -q "epsilon" "$tmp/info"; then
	ok "info names SD-Turbo and its prediction type"
else
	notok "info names SD-Turbo: $(cat "$tmp/info")"
fi
if "$bin" info "$tmp/v2-1_768-tiny.safetensors" > "$tmp/info" 2>&1 &&
    grep -q "prediction:    v: its LDM config says parameterization v" "$tmp/info"; then
	ok "info says the 768-v model predicts v because of its LDM config"
else
	notok "info on the 768-v file: $(cat "$tmp/info")"
fi

run_done
