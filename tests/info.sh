#!/bin/sh
# info.sh: `sdbatch info` says what a model is, in text and JSON, and
# refuses what it cannot read with the right exit status.
set -u
bin=${SDBATCH_BIN:-src/sdbatch}
td=${SDBATCH_SHARED:-../shared}/testdata/sd15-tiny
n=0 fails=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
tmp=$(mktemp -d /tmp/sdbatch-info.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

"$bin" info /nonexistent.safetensors > /dev/null 2> "$tmp/err"; rc=$?
[ "$rc" -eq 66 ] && grep -q nonexistent "$tmp/err" && ok "a missing file: exit 66" || notok "a missing file: exit $rc"
printf 'not a model' > "$tmp/junk.safetensors"
"$bin" info "$tmp/junk.safetensors" > /dev/null 2> "$tmp/err"; rc=$?
[ "$rc" -eq 65 ] && grep -q "junk.safetensors" "$tmp/err" && ok "a broken file: exit 65 ($(cat "$tmp/err"))" || notok "a broken file: exit $rc"
"$bin" info > /dev/null 2>&1; rc=$?
[ "$rc" -eq 64 ] && ok "no argument: exit 64" || notok "no argument: exit $rc"
HF_HUB_CACHE="$tmp/hub" "$bin" info org/none > /dev/null 2> "$tmp/err"; rc=$?
[ "$rc" -eq 66 ] && grep -q "sdbatch pull" "$tmp/err" && ok "a Hub id not in the cache: exit 66, says how to get it" || notok "a Hub id not in the cache: exit $rc"

if [ ! -d "$td" ]; then
	echo "ok $((n + 1)) # SKIP ../shared is absent: no test model"
	echo "1..$((n + 1))"
	exit "$fails"
fi
out=$("$bin" info "$td/model.safetensors")
echo "$out" | grep -q "Stable Diffusion 1.x (sd15)" && echo "$out" | grep -q "tensors:       961" &&
    echo "$out" | grep -q "BLAS:" && ok "a single file: sd15, 961 tensors, the BLAS" || notok "a single file: $out"
out=$("$bin" info --json "$td/diffusers")
echo "$out" | grep -q '"layout":"diffusers"' && echo "$out" | grep -q '"supported":true' &&
    ok "a diffusers folder, as JSON" || notok "a diffusers folder: $out"
echo "$out" | grep -q '{"name":"dpmpp_2m_sde","a1111":"DPM++ 2M SDE","karras":true' &&
    echo "$out" | grep -q '{"name":"heun","a1111":"Heun","karras":true,"unet_calls_per_step":2' &&
    ok "info --json lists the samplers" || notok "info --json lists the samplers: $out"
out=$("$bin" info "$td/model-inpaint.safetensors")
echo "$out" | grep -q "9 input channels, inpainting" && echo "$out" | grep -q "unet-only" &&
    ok "the inpainting UNet file" || notok "the inpainting UNet file: $out"
echo "1..$n"
[ "$fails" -eq 0 ]
