#!/bin/sh
# run-inputs.sh: init images and masks in every PNG form give the same
# image as the 8-bit RGB (or grey) file with the same pixels: grey,
# grey+alpha, paletted, RGBA (alpha ignored) and 16-bit; other sizes are
# resized; broken inputs give clear errors.
set -u
bin=${SDBATCH_BIN:-src/sdbatch}
shared=${SDBATCH_SHARED:-../shared}
pngcmp=${PNGCMP:-tests/pngcmp}
variant=${PNGVARIANT:-tests/pngvariant}
td=$shared/testdata/sd15-tiny
if [ ! -d "$td" ]; then
	echo "1..0 # SKIP ../shared is absent: no test model"
	exit 0
fi
tmp=$(mktemp -d /tmp/sdbatch-inputs.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
n=0 fails=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }

render() {	# out init [mask...]; sets no other variable
	r_out=$1 r_init=$2
	shift 2
	"$bin" run --quiet --progress none --model "$td/model.safetensors" \
	    --tokenizer "$shared/data/clip-tokenizer" --prompt "a red boat" --sampler ddim \
	    --steps 3 --seed 7 --width 128 --height 128 --init-image "$r_init" --strength 0.6 \
	    -o "$r_out" "$@" > /dev/null 2> "$tmp/err"
}

init=$td/goldens/img2img_ddim_s10_str075_init.png
mask=$td/goldens/inpaint4_ddim_s10_str1_mask.png
"$variant" "$init" "$tmp/q.png" quantize && "$variant" "$init" "$tmp/g.png" desaturate || {
	echo "1..0 # SKIP cannot make the input variants"; exit 0; }
"$variant" "$tmp/q.png" "$tmp/q-palette.png" palette
"$variant" "$tmp/q.png" "$tmp/q-rgba.png" rgba
"$variant" "$tmp/q.png" "$tmp/q-16.png" rgb16
"$variant" "$tmp/g.png" "$tmp/g-grey.png" grey
"$variant" "$tmp/g.png" "$tmp/g-ga.png" grey-alpha

render "$tmp/out-q.png" "$tmp/q.png" && render "$tmp/out-g.png" "$tmp/g.png" ||
	notok "img2img from an RGB PNG: $(cat "$tmp/err")"
for v in q-palette:q q-rgba:q q-16:q g-grey:g g-ga:g; do
	f=${v%%:*} base=${v##*:}
	if render "$tmp/out-$f.png" "$tmp/$f.png" && m=$("$pngcmp" --same "$tmp/out-$f.png" "$tmp/out-$base.png"); then
		ok "init image as $f: $m as the RGB file"
	else
		notok "init image as $f: $(cat "$tmp/err") $m"
	fi
done

# A JPEG init image (libjpeg, decoded as PIL decodes it).
if "$variant" "$init" "$tmp/init.jpg" jpeg 2>/dev/null; then
	if render "$tmp/out-jpeg.png" "$tmp/init.jpg" && [ -s "$tmp/out-jpeg.png" ]; then
		ok "a JPEG init image is read"
	else
		notok "a JPEG init image is read: $(cat "$tmp/err")"
	fi
else
	n=$((n + 1)); echo "ok $n # SKIP built without libjpeg"
fi

# A mask as RGB, or with alpha, is read as the grey it shows.
"$variant" "$mask" "$tmp/m-rgb-src.png" desaturate
"$variant" "$tmp/m-rgb-src.png" "$tmp/m-grey.png" grey
"$variant" "$tmp/m-rgb-src.png" "$tmp/m-rgba.png" rgba
if render "$tmp/out-m1.png" "$init" --mask "$tmp/m-grey.png" &&
    render "$tmp/out-m2.png" "$init" --mask "$tmp/m-rgb-src.png" &&
    render "$tmp/out-m3.png" "$init" --mask "$tmp/m-rgba.png" &&
    "$pngcmp" --same "$tmp/out-m1.png" "$tmp/out-m2.png" >/dev/null &&
    "$pngcmp" --same "$tmp/out-m1.png" "$tmp/out-m3.png" >/dev/null; then
	ok "a mask as grey, RGB or RGBA PNG gives the same image"
else
	notok "a mask as grey, RGB or RGBA PNG gives the same image: $(cat "$tmp/err")"
fi

# Another size is resized to the job's (Lanczos), not refused.
"$bin" run --quiet --progress none --model "$td/model.safetensors" --tokenizer "$shared/data/clip-tokenizer" \
    --prompt "a red boat" --sampler ddim --steps 2 --seed 7 --width 64 --height 64 \
    --init-image "$init" --strength 0.5 -o "$tmp/small.png" > /dev/null 2> "$tmp/err" &&
	m=$("$pngcmp" --same "$tmp/small.png" "$tmp/small.png") && ok "a 128x128 init image for a 64x64 job is resized" ||
	notok "a 128x128 init image for a 64x64 job is resized: $(cat "$tmp/err")"

# Broken inputs: clear errors with the right exit status.
head -c 300 "$init" > "$tmp/cut.png"
printf 'GIF89a not a png' > "$tmp/fake.png"
for c in "cut.png:65:$tmp/cut.png" "fake.png:65:$tmp/fake.png" "missing.png:66:$tmp/missing.png"; do
	name=${c%%:*} rest=${c#*:} want=${rest%%:*} path=${rest#*:}
	render "$tmp/x.png" "$path"
	rc=$?
	if [ "$rc" -eq "$want" ] && grep -q "$name" "$tmp/err"; then
		ok "init image $name: exit $rc, $(head -c 150 "$tmp/err")"
	else
		notok "init image $name: exit $rc (want $want): $(cat "$tmp/err")"
	fi
done
echo "1..$n"
[ "$fails" -eq 0 ]
