#!/bin/sh
# run-samplers.sh: `sdbatch run` end to end with the samplers and sizes of
# issue 18: every PNG equals the image diffusers made for the same model,
# prompt, seed, sampler and size (within one level of 255 per value), for
# Heun, DPM2, DPM2 a, UniPC, DPM++ 2M SDE (and Karras), DEIS, LCM, Euler and
# LMS Karras, sizes that are multiples of 8 but not 64 (72x104, 120x88), and
# img2img / inpainting with Karras sigmas at strength < 1.  Sampler names
# are given as users type them (A1111's, diffusers'); the PNG's parameters
# text carries A1111's name.
set_name=sd15-tiny
. "$(dirname "$0")/run-lib.sh"

negative="blurry, low quality"
model="$td/model.safetensors"

# case sampler schedule(- = none given) steps guidance seed width height [args...]
check() {
	case=$1 sampler=$2 schedule=$3 steps=$4 guidance=$5 seed=$6 w=$7 h=$8
	shift 8
	out="$tmp/$case.png"
	if [ "$schedule" != - ]; then
		set -- --schedule "$schedule" "$@"
	fi
	if ! "$bin" run --quiet --progress none --model "$model" --tokenizer "$tok" \
	    --prompt "$prompt" --negative "$negative" --sampler "$sampler" \
	    --steps "$steps" --guidance "$guidance" --seed "$seed" --width "$w" --height "$h" \
	    -o "$out" "$@" > "$tmp/stdout" 2> "$tmp/stderr"; then
		notok "$case: sdbatch run failed: $(tail -1 "$tmp/stderr")"
		return
	fi
	if msg=$("$pngcmp" "$out" "$case" image_u8); then
		ok "$case ($sampler): the PNG equals diffusers' image ($msg)"
	else
		notok "$case ($sampler): $msg"
	fi
}

check txt2img_heun_s4 Heun - 4 7.5 1100 128 128
check txt2img_dpm2_s4_64x128 dpm_2 normal 4 7.5 1110 128 64
check txt2img_dpm2_a_s4_64x128 "DPM2 a" - 4 7.5 1120 128 64
check txt2img_unipc_s4 UniPC - 4 7.5 1130 128 128
check txt2img_dpmpp2m_sde_s4_64x128 dpmpp_2m_sde normal 4 7.5 1140 128 64
check txt2img_dpmpp2m_sde_karras_s4 "DPM++ 2M SDE Karras" - 4 7.5 1150 128 128
check txt2img_deis_s4_64x128 deis - 4 7.5 1160 128 64
check txt2img_lcm_s4_nocfg_64x128 LCM - 4 1 1170 128 64
check txt2img_euler_karras_s4_64x128 euler karras 4 7.5 1180 128 64
check txt2img_lms_karras_s4_64x128 lms_karras - 4 7.5 1190 128 64
check txt2img_ddim_s4_72x104 ddim - 4 7.5 1200 104 72
check txt2img_euler_a_s4_120x88 "Euler a" - 4 7.5 1210 88 120
check img2img_dpmpp2m_karras_s10_str06 "DPM++ 2M Karras" - 10 7.5 3400 128 128 \
    --init-image "$td/goldens/img2img_dpmpp2m_karras_s10_str06_init.png" --strength 0.6
check img2img_euler_karras_s10_str08_64x128 euler karras 10 7.5 3410 128 64 \
    --init-image "$td/goldens/img2img_euler_karras_s10_str08_64x128_init.png" --strength 0.8
check inpaint4_dpmpp2m_karras_s8_str075_64x128 dpmpp_2m karras 8 7.5 3420 128 64 \
    --init-image "$td/goldens/inpaint4_dpmpp2m_karras_s8_str075_64x128_init.png" \
    --mask "$td/goldens/inpaint4_dpmpp2m_karras_s8_str075_64x128_mask.png" --strength 0.75

# A1111's names in the PNG's parameters text.
p="$tmp/txt2img_dpmpp2m_sde_karras_s4.png"
if [ -f "$p" ] && grep -a -q "Sampler: DPM++ 2M SDE, Schedule type: Karras" "$p"; then
	ok "the PNG says Sampler: DPM++ 2M SDE, Schedule type: Karras"
else
	notok "the PNG says Sampler: DPM++ 2M SDE, Schedule type: Karras"
fi
p="$tmp/txt2img_dpm2_a_s4_64x128.png"
if [ -f "$p" ] && grep -a -q "Sampler: DPM2 a, Schedule type: Normal" "$p" &&
    grep -a -q "Size: 128x64" "$p"; then
	ok "the PNG says Sampler: DPM2 a, Schedule type: Normal"
else
	notok "the PNG says Sampler: DPM2 a, Schedule type: Normal"
fi

# What diffusers refuses is refused, with the reason.
"$bin" run --quiet --progress none --model "$model" --tokenizer "$tok" --prompt x \
    --sampler lcm --schedule karras --steps 2 --width 64 --height 64 -o "$tmp/x.png" \
    > /dev/null 2> "$tmp/err"
rc=$?
if [ $rc = 65 ] && grep -q "karras is not available with sampler lcm" "$tmp/err"; then
	ok "lcm with karras is refused, with the reason (exit 65)"
else
	notok "lcm with karras is refused, with the reason (exit $rc: $(cat "$tmp/err"))"
fi
"$bin" run --quiet --progress none --model "$model" --tokenizer "$tok" --prompt x \
    --sampler lcm --steps 60 --width 64 --height 64 -o "$tmp/x.png" > /dev/null 2> "$tmp/err"
rc=$?
if [ $rc = 65 ] && grep -q "LCM runs at most 50 steps" "$tmp/err"; then
	ok "lcm with 60 steps is refused, with the reason (exit 65)"
else
	notok "lcm with 60 steps is refused, with the reason (exit $rc: $(cat "$tmp/err"))"
fi
"$bin" run --quiet --progress none --model "$model" --prompt x --sampler "Euler b" \
    -o "$tmp/x.png" > /dev/null 2> "$tmp/err"
rc=$?
if [ $rc = 64 ] && grep -q "unknown sampler \"Euler b\"" "$tmp/err"; then
	ok "an unknown sampler name is a usage error naming it"
else
	notok "an unknown sampler name is a usage error naming it (exit $rc: $(cat "$tmp/err"))"
fi
if "$bin" run --list-samplers > "$tmp/list" && grep -q "^dpmpp_2m_sde  *DPM++ 2M SDE  *yes" "$tmp/list" &&
    grep -q "^heun  *Heun  *yes  *2/step" "$tmp/list" && [ "$(grep -c . "$tmp/list")" -ge 14 ]; then
	ok "run --list-samplers lists the samplers with A1111's names"
else
	notok "run --list-samplers lists the samplers with A1111's names"
fi
run_done
