#!/bin/sh
# bench.sh: `sdbatch bench` runs on the tiny test checkpoint and prints its
# JSON object (no timing is asserted).
n=0
fail=0
t() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fail=1; fi; }

bin=${SDBATCH_BIN:-src/sdbatch}
model=${SDBATCH_SHARED:-../shared}/testdata/sd15-tiny/model.safetensors
if [ ! -f "$model" ]; then
	echo "1..0 # SKIP no shared test data ($model)"
	exit 0
fi
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

"$bin" bench --help >"$tmp/help" 2>&1
t $? "bench --help"
"$bin" bench --size 100 >/dev/null 2>"$tmp/err"
t $([ $? = 64 ] && grep -q "multiple of 8" "$tmp/err"; echo $?) "a size that is not a multiple of 8 is a usage error"
"$bin" bench --sampler warp >/dev/null 2>"$tmp/err"
t $([ $? = 64 ] && grep -q 'unknown sampler "warp"' "$tmp/err"; echo $?) "an unknown sampler is a usage error"
"$bin" bench --model "$tmp/missing.safetensors" --sgemm-size 0 >/dev/null 2>"$tmp/err"
t $([ $? != 0 ] && grep -q "missing.safetensors" "$tmp/err"; echo $?) "a missing model is named"
"$bin" bench --model "$model" --size 64 --steps 2 --threads 2 --sgemm-size 64 --json >"$tmp/out" 2>"$tmp/err"
t $? "bench on the tiny checkpoint"
last=$(tail -n 1 "$tmp/out")
ok=0
for key in unet_step_s vae_decode_s text_encoder_s peak_rss_mb unet_gflops vae_gflops sgemm_peak_gflops blas; do
	case $last in *"\"$key\":"*) ;; *) ok=1; echo "# no $key in: $last" ;; esac
done
t $ok "the last line is the JSON object with every figure"
grep -q "^UNet step:" "$tmp/out" && grep -q "^BLAS:" "$tmp/out"
t $? "the human-readable lines are there"
"$bin" bench -q --model "$model" --size 64 --steps 2 --threads 2 --sgemm-size 64 >"$tmp/out" 2>"$tmp/err"
t $([ $? = 0 ] && grep -q "^UNet step:" "$tmp/out" && grep -q "^VAE decode:" "$tmp/out" &&
    ! grep -q "^BLAS:" "$tmp/out"; echo $?) "bench -q prints the results, not the setup"
"$bin" bench -q --model "$model" --size 72 --steps 2 --threads 2 --sgemm-size 64 --sampler Heun >"$tmp/out" 2>"$tmp/err"
t $([ $? = 0 ] && grep -q "^sampler:        heun: 20 steps x 2 UNet calls = 39 calls" "$tmp/out" &&
    grep -q "^image:.* 39 UNet calls" "$tmp/out"; echo $?) "bench --sampler heun: the image takes 20 steps x 2 calls (72x72)"
"$bin" bench -q --model "$model" --size 64 --steps 2 --threads 2 --sgemm-size 64 --json >"$tmp/out" 2>"$tmp/err"
t $([ $? = 0 ] && [ "$(wc -l <"$tmp/out")" -eq 1 ] && grep -q '"unet_step_s":' "$tmp/out"; echo $?) \
    "bench -q --json prints the JSON line alone"
echo "1..$n"
exit 0
