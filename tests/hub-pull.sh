#!/bin/sh
# hub-pull.sh: `sdbatch pull` against fakehub (a stand-in for the Hugging
# Face Hub on 127.0.0.1) serving the tiny test model, and jobs that name
# the model by Hub id: from the cache, offline, and downloaded on first use.
# Speaks TAP.

BIN=${SDBATCH_TEST_BIN:-${SDBATCH_BIN:-}}
SHARED=${SDBATCH_SHARED:-../shared}
TINY=$SHARED/testdata/sd15-tiny/diffusers
BUILDDIR=$(cd "$(dirname "${BIN:-.}")/.." 2>/dev/null && pwd)
FAKEHUB=${SDBATCH_FAKEHUB:-$BUILDDIR/tests/fakehub}
OMP_NUM_THREADS=1
OMP_WAIT_POLICY=passive
export OMP_NUM_THREADS OMP_WAIT_POLICY
unset SDBATCH_CONFIG HF_TOKEN HUGGING_FACE_HUB_TOKEN HF_TOKEN_PATH HF_HUB_OFFLINE \
	HF_ENDPOINT HUGGINGFACE_HUB_CACHE XDG_CACHE_HOME SDBATCH_TOKENIZER

n=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); echo "not ok $n - $*"; }
skip() { n=$((n + 1)); echo "ok $n # SKIP $*"; }
check() {
	_d=$1
	shift
	if "$@"; then ok "$_d"; else not_ok "$_d"; fi
}
skip_all() { echo "1..0 # SKIP $*"; exit 0; }
diag_file() { sed 's/^/# /' "$1"; }

[ -n "$BIN" ] && [ -x "$BIN" ] || skip_all "no sdbatch binary (SDBATCH_BIN)"
[ -x "$FAKEHUB" ] || skip_all "no $FAKEHUB"
[ -f "$TINY/model_index.json" ] || skip_all "../shared/testdata/sd15-tiny is missing"
"$BIN" pull --help > /dev/null 2>&1 || skip_all "this sdbatch has no pull command"

T=$(mktemp -d "${TMPDIR:-/tmp}/sdbatch-hub-test.XXXXXX") || exit 1
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	for p in $pids; do wait "$p" 2>/dev/null; done
	[ -z "${KEEP:-}" ] && rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# The fake Hub's repo test/tiny-sd: the tiny model's files.
mkdir -p "$T/root/test/tiny-sd"
for f in "$TINY"/*; do ln -s "$f" "$T/root/test/tiny-sd/"; done
# and test/tiny-vae: a repo holding one part (config.json and weights)
mkdir -p "$T/root/test/tiny-vae"
for f in "$TINY"/vae/*; do ln -s "$f" "$T/root/test/tiny-vae/"; done

# and test/tiny-sd3: SD3 with its T5 in shards (an index and the file it names)
SD3=$SHARED/testdata/sd3-tiny/diffusers
if [ -f "$SD3/model_index.json" ]; then
	mkdir -p "$T/root/test/tiny-sd3"
	for f in "$SD3"/*; do
		[ "$(basename "$f")" = text_encoder_3 ] || ln -s "$f" "$T/root/test/tiny-sd3/"
	done
	mkdir -p "$T/root/test/tiny-sd3/text_encoder_3"
	ln -s "$SD3/text_encoder_3/config.json" "$T/root/test/tiny-sd3/text_encoder_3/"
	ln -s "$SD3/text_encoder_3/model.safetensors" \
		"$T/root/test/tiny-sd3/text_encoder_3/model-00001-of-00001.safetensors"
	printf '{"metadata": {}, "weight_map": {"shared.weight": "model-00001-of-00001.safetensors", "encoder.final_layer_norm.weight": "model-00001-of-00001.safetensors"}}\n' \
		> "$T/root/test/tiny-sd3/text_encoder_3/model.safetensors.index.json"
fi

# start_hub NAME [OPTIONS]: fakehub in the background; $port, $log.
start_hub() {
	_name=$1
	shift
	rm -f "$T/$_name.port"
	"$FAKEHUB" -r "$T/root" -p "$T/$_name.port" -l "$T/$_name.log" -t 150 "$@" &
	pids="$pids $!"
	_i=0
	while [ ! -s "$T/$_name.port" ] && [ $_i -lt 200 ]; do sleep 0.05; _i=$((_i + 1)); done
	port=$(cat "$T/$_name.port" 2>/dev/null)
	log=$T/$_name.log
	[ -n "$port" ]
}
requests() { wc -l < "$log" 2>/dev/null | tr -d ' ' || echo 0; }

start_hub hub || skip_all "fakehub did not start"
HF_ENDPOINT=http://127.0.0.1:$port
HF_HUB_CACHE=$T/cache
HF_HOME=$T/hf-home
export HF_ENDPOINT HF_HUB_CACHE HF_HOME

# usage
"$BIN" pull > /dev/null 2>&1; rc=$?
check "pull without an id: exit 64 (got $rc)" [ $rc -eq 64 ]
"$BIN" pull ./not/an-id > /dev/null 2> "$T/err"; rc=$?
check "pull of a path: exit 64 (got $rc)" [ $rc -eq 64 ]
"$BIN" help pull | grep -q "^Usage: sdbatch pull"
check "sdbatch help pull" [ $? -eq 0 ]

# pull: the snapshot folder on stdout, in huggingface_hub's layout
"$BIN" pull test/tiny-sd > "$T/out" 2> "$T/err"; rc=$?
snap=$(cat "$T/out")
check "pull exits 0 (got $rc)" [ $rc -eq 0 ]
[ $rc -eq 0 ] || diag_file "$T/err"
case $snap in
"$T/cache/models--test--tiny-sd/snapshots/"*) ok "pull prints the snapshot folder" ;;
*) not_ok "pull prints the snapshot folder (got '$snap')" ;;
esac
commit=$(cat "$T/cache/models--test--tiny-sd/refs/main" 2>/dev/null)
check "refs/main names the snapshot" [ "$snap" = "$T/cache/models--test--tiny-sd/snapshots/$commit" ]
target=$(readlink "$snap/unet/diffusion_pytorch_model.safetensors")
want=$(sha256sum "$TINY/unet/diffusion_pytorch_model.safetensors" | cut -d' ' -f1)
check "the UNet is a relative link to ../../../blobs/SHA-256 ($target)" \
	[ "$target" = "../../../blobs/$want" ]
cmp -s "$snap/unet/diffusion_pytorch_model.safetensors" "$TINY/unet/diffusion_pytorch_model.safetensors"
check "the UNet has the bytes served" [ $? -eq 0 ]
grep -q "downloaded unet/diffusion_pytorch_model.safetensors" "$T/err"
check "pull says what it downloaded" [ $? -eq 0 ]
"$BIN" info "$snap" > "$T/info" 2>&1
grep -q "sd15" "$T/info"
check "sdbatch info reads the snapshot" [ $? -eq 0 ]

# HF_HUB_OFFLINE: the cache answers, the network is never used
before=$(requests)
HF_HUB_OFFLINE=1 "$BIN" pull test/tiny-sd > "$T/out" 2> "$T/err"; rc=$?
check "HF_HUB_OFFLINE=1: pull of a cached model exits 0 (got $rc)" [ $rc -eq 0 ]
HF_HUB_OFFLINE=1 "$BIN" pull test/elsewhere > "$T/out" 2> "$T/err"; rc=$?
check "HF_HUB_OFFLINE=1: an uncached model: exit 66 (got $rc)" [ $rc -eq 66 ]
grep -q HF_HUB_OFFLINE "$T/err"
check "HF_HUB_OFFLINE=1: the message says why" [ $? -eq 0 ]
check "HF_HUB_OFFLINE=1: no request reached the Hub" [ "$(requests)" = "$before" ]

"$BIN" pull test/nope > /dev/null 2> "$T/err"; rc=$?
check "a missing repo: exit 66 (got $rc)" [ $rc -eq 66 ]
grep -q "no such model repository" "$T/err"
check "a missing repo: a message that says so" [ $? -eq 0 ]

# A job naming the model by Hub id, rendered from the cache, offline
cat > "$T/job.yaml" <<EOF
prompt: "a red cube"
model: test/tiny-sd
width: 64
height: 64
steps: 2
seed: 1
EOF
HF_HUB_OFFLINE=1 "$BIN" run -q -o "$T/a.png" "$T/job.yaml" > "$T/out" 2> "$T/err"; rc=$?
if [ $rc -eq 0 ] && [ -s "$T/a.png" ]; then ok "a job with model: test/tiny-sd renders from the cache"
else not_ok "a job with model: test/tiny-sd renders from the cache (exit $rc)"; fi
[ $rc -eq 0 ] || diag_file "$T/err"
"$BIN" run -q --model test/tiny-sd -p "a red cube" --width 64 --height 64 --steps 2 \
	--seed 1 -o "$T/b.png" > "$T/out" 2> "$T/err"; rc=$?
if [ $rc -eq 0 ] && cmp -s "$T/a.png" "$T/b.png"; then ok "--model test/tiny-sd renders the same image"
else not_ok "--model test/tiny-sd renders the same image (exit $rc)"; fi

# The configuration's model as a Hub id; a VAE from a one-part repo
printf 'model: test/tiny-sd\n' > "$T/model.yaml"
HF_HUB_OFFLINE=1 "$BIN" run -q --config "$T/model.yaml" -p "a red cube" --width 64 \
	--height 64 --steps 2 --seed 1 -o "$T/e.png" > "$T/out" 2> "$T/err"; rc=$?
if [ $rc -eq 0 ] && cmp -s "$T/a.png" "$T/e.png"; then ok "model: test/tiny-sd in the configuration"
else not_ok "model: test/tiny-sd in the configuration (exit $rc)"; diag_file "$T/err"; fi
"$BIN" pull -q test/tiny-vae > "$T/out" 2> "$T/err"; rc=$?
case $(cat "$T/out") in
*/models--test--tiny-vae/snapshots/*/diffusion_pytorch_model.safetensors) vae_ok=1 ;;
*) vae_ok=0 ;;
esac
[ $rc -eq 0 ] || vae_ok=0
check "pull of a one-part repo prints its weights file (exit $rc)" [ $vae_ok -eq 1 ]
HF_HUB_OFFLINE=1 "$BIN" run -q --vae test/tiny-vae -o "$T/f.png" "$T/job.yaml" > "$T/out" 2> "$T/err"; rc=$?
if [ $rc -eq 0 ] && [ -s "$T/f.png" ] && grep -q "models--test--tiny-vae" "$T/f.png"; then
	ok "--vae test/tiny-vae: rendered with the VAE from the cache"
else not_ok "--vae test/tiny-vae (exit $rc)"; diag_file "$T/err"; fi

# Not in the cache and downloads not allowed: a message that says what to do
HF_HUB_CACHE=$T/cache-empty "$BIN" run -q -o "$T/c.png" "$T/job.yaml" > "$T/out" 2> "$T/err"; rc=$?
check "not cached, no downloads: exit 66 (got $rc)" [ $rc -eq 66 ]
grep -q "sdbatch pull test/tiny-sd" "$T/err"
check "not cached, no downloads: the message says sdbatch pull" [ $? -eq 0 ]

# Downloaded on first use when the configuration allows it
printf 'hub:\n  download: true\n  cache: %s\n' "$T/cache-first" > "$T/conf.yaml"
"$BIN" run -q --config "$T/conf.yaml" -o "$T/d.png" "$T/job.yaml" > "$T/out" 2> "$T/err"; rc=$?
if [ $rc -eq 78 ] && grep -q "hub" "$T/err"; then
	skip "this sdbatch's configuration has no hub: section"
else
	if [ $rc -eq 0 ] && [ -s "$T/d.png" ] &&
	    [ -d "$T/cache-first/models--test--tiny-sd/snapshots/$commit" ]; then
		ok "hub: { download: true }: downloaded on first use and rendered"
	else
		not_ok "hub: { download: true }: downloaded on first use and rendered (exit $rc)"
	fi
	[ $rc -eq 0 ] || diag_file "$T/err"
fi

# The display of a first-use download: with --progress bar (a bar even
# off a terminal) a byte-count bar per file redrawn in place and a line
# when each is in place; with --progress none or json (or off a terminal)
# one line per file as it starts, never a bar.
CR=$(printf '\r')
ESC=$(printf '\033')
bar_re='downloading \[[0-9]*/[0-9]*\] test/tiny-sd/unet/diffusion_pytorch_model\.safetensors \[[#.]*\] *[0-9]*% [0-9.]* [kMG]*B/6\.7 MB'
has_bar() { grep -q "$bar_re" "$1"; }
no_bar() { ! grep -q "$CR\|$ESC\|\[[#.]*\] *[0-9]*%" "$1"; }
for mode in bar none json; do
	printf 'hub:\n  download: true\n  cache: %s\n' "$T/cache-$mode" > "$T/$mode.yaml"
	"$BIN" run --progress $mode --config "$T/$mode.yaml" -o "$T/p-$mode.png" \
		"$T/job.yaml" > "$T/out" 2> "$T/$mode.err"; rc=$?
	if [ $rc -eq 0 ] && [ -s "$T/p-$mode.png" ] &&
	    [ "$(cat "$T/out")" = "$T/p-$mode.png" ]; then
		ok "run --progress $mode: downloaded on first use, the image written"
	else
		not_ok "run --progress $mode: downloaded on first use, the image written (exit $rc)"
		diag_file "$T/$mode.err"
	fi
done
has_bar "$T/bar.err"
check "run --progress bar: a byte-count bar while the UNet downloads" [ $? -eq 0 ]
grep -q "$CR$ESC\[K" "$T/bar.err"
check "run --progress bar: the bar is redrawn in place (CR, erase line)" [ $? -eq 0 ]
grep -q "$ESC\[Ksdbatch run: job: downloaded \[[0-9]*/[0-9]*\] test/tiny-sd/unet/diffusion_pytorch_model\.safetensors (6\.7 MB)$" "$T/bar.err"
check "run --progress bar: a line once each file is in place" [ $? -eq 0 ]
! grep -q "downloading \[[0-9]*/[0-9]*\] [^ ]* ([0-9.]* [kMG]*B)" "$T/bar.err"
check "run --progress bar: no notice line for a file starting (the bar shows it)" [ $? -eq 0 ]
for mode in none json; do
	no_bar "$T/$mode.err"
	check "run --progress $mode: no bar" [ $? -eq 0 ]
	lines=$(grep -c "^sdbatch run: job: downloading \(\[[0-9]*/[0-9]*\] \)*test/tiny-sd/.* ([0-9.]* [kMG]*B)$" "$T/$mode.err")
	files=$(find "$T/cache-$mode/models--test--tiny-sd/blobs" -type f | wc -l)
	check "run --progress $mode: one line per file downloaded ($lines for $files)" \
		[ "$lines" -eq "$files" -a "$files" -gt 0 ]
done
lines=$(grep -c '"event":"loading".*"path":"test/tiny-sd/' "$T/json.err")
check "run --progress json: a loading event per file downloaded ($lines)" [ "$lines" -eq "$files" ]
# pull shares the bar
"$BIN" pull --progress bar --cache "$T/cache-pullbar" \
	test/tiny-sd/unet/diffusion_pytorch_model.safetensors > "$T/out" 2> "$T/err"; rc=$?
if [ $rc -eq 0 ] && grep -q "unet/diffusion_pytorch_model\.safetensors \[[#.]*\] *[0-9]*% .*/6\.7 MB" "$T/err" &&
    grep -q "downloaded unet/diffusion_pytorch_model.safetensors (6\.7 MB)" "$T/err"; then
	ok "pull --progress bar: the byte-count bar"
else
	not_ok "pull --progress bar: the byte-count bar (exit $rc)"
	diag_file "$T/err"
fi

# pull fills the cache the configuration names
if "$BIN" pull --help | grep -q -- "--config"; then
	printf 'hub:\n  cache: %s\n' "$T/cache-conf" > "$T/hubconf.yaml"
	"$BIN" pull -q --config "$T/hubconf.yaml" test/tiny-vae > "$T/out" 2> "$T/err"; rc=$?
	case $(cat "$T/out") in
	"$T/cache-conf/models--test--tiny-vae/snapshots/"*) conf_ok=1 ;;
	*) conf_ok=0 ;;
	esac
	[ $rc -eq 0 ] || conf_ok=0
	check "pull --config: into the configuration's hub.cache (exit $rc)" [ $conf_ok -eq 1 ]
else
	skip "this sdbatch pull reads no configuration"
fi

# A pull killed with SIGKILL mid-file resumes where it stopped
start_hub slow -s 600000 || not_ok "a slow fakehub starts"
vae=$(sha256sum "$TINY/vae/diffusion_pytorch_model.safetensors" | cut -d' ' -f1)
part=$T/cache-kill/models--test--tiny-sd/blobs/$vae.incomplete
HF_ENDPOINT=http://127.0.0.1:$port HF_HUB_CACHE=$T/cache-kill \
	"$BIN" pull -q test/tiny-sd/vae/diffusion_pytorch_model.safetensors > /dev/null 2>&1 &
victim=$!
_i=0
while [ "$(stat -c %s "$part" 2>/dev/null || echo 0)" -lt 300000 ] && [ $_i -lt 400 ]; do
	sleep 0.025
	_i=$((_i + 1))
done
kill -9 $victim 2>/dev/null
wait $victim 2>/dev/null
have=$(stat -c %s "$part" 2>/dev/null || echo 0)
if [ "$have" -ge 300000 ] && [ "$have" -lt "$(stat -L -c %s "$TINY/vae/diffusion_pytorch_model.safetensors")" ]; then
	ok "kill -9 mid-file leaves $have bytes in blobs/SHA-256.incomplete"
else
	not_ok "kill -9 mid-file leaves part of the file in blobs/SHA-256.incomplete ($have bytes)"
fi
HF_ENDPOINT=http://127.0.0.1:$port HF_HUB_CACHE=$T/cache-kill \
	"$BIN" pull test/tiny-sd/vae/diffusion_pytorch_model.safetensors > "$T/out" 2> "$T/err"; rc=$?
if [ $rc -eq 0 ] && cmp -s "$(cat "$T/out")" "$TINY/vae/diffusion_pytorch_model.safetensors"; then
	ok "pull again resumes and completes"
else
	not_ok "pull again resumes and completes (exit $rc)"
fi
grep -q "range=bytes=$have- " "$log"
check "the second pull asked for Range: bytes=$have-" [ $? -eq 0 ]
grep -q "resuming" "$T/err"
check "pull says it resumes" [ $? -eq 0 ]

# A model downloaded on first use by run and watch: a line per file on
# stderr, "loading" events naming the file, and SIGTERM stops the download
# and requeues (exit 75) instead of waiting for it to end.
start_hub slow2 -s 1000000 || not_ok "a second slow fakehub starts"
printf 'hub:\n  download: true\n  cache: %s\n' "$T/cache-term" > "$T/term.yaml"
# wait_for FILE PATTERN: up to 20 s for PATTERN in FILE
wait_for() {
	_i=0
	while ! grep -q "$2" "$1" 2>/dev/null && [ $_i -lt 400 ]; do
		sleep 0.05
		_i=$((_i + 1))
	done
	grep -q "$2" "$1" 2>/dev/null
}
HF_ENDPOINT=http://127.0.0.1:$port "$BIN" run --progress json --config "$T/term.yaml" \
	-o "$T/t.png" "$T/job.yaml" > "$T/out" 2> "$T/term.err" &
victim=$!
wait_for "$T/term.err" '"event":"loading".*"path":"test/tiny-sd/[a-z_]*/[a-z_]*\.safetensors"'
check "run --progress json: a loading event names the file downloading" [ $? -eq 0 ]
kill -TERM $victim 2>/dev/null
wait $victim; rc=$?
check "SIGTERM during a first-use download: run exits 75 (got $rc)" [ $rc -eq 75 ]
grep -q "downloading .*test/tiny-sd/.*safetensors" "$T/term.err"
check "run says which file it downloads" [ $? -eq 0 ]
ls "$T/cache-term/models--test--tiny-sd/blobs/" 2>/dev/null | grep -q '\.incomplete$'
check "the download stopped at the signal (a part is left to resume)" [ $? -eq 0 ]
[ $rc -eq 75 ] || diag_file "$T/term.err"
printf 'hub:\n  download: true\n  cache: %s\n' "$T/cache-termbar" > "$T/termbar.yaml"
HF_ENDPOINT=http://127.0.0.1:$port "$BIN" run --progress bar --config "$T/termbar.yaml" \
	-o "$T/tb.png" "$T/job.yaml" > "$T/out" 2> "$T/termbar.err" &
victim=$!
wait_for "$T/termbar.err" 'downloading .* \[[#.]*\] *[0-9]*% '
kill -TERM $victim 2>/dev/null
wait $victim; rc=$?
check "run --progress bar: SIGTERM during the download bar: exit 75 (got $rc)" [ $rc -eq 75 ]
# The message starts a line of its own: after the bar's clearing sequence
# when the signal came while a bar was drawn, else after a newline (a file
# may have just finished: the bar was gone already).
last=$(grep "sdbatch run: interrupted" "$T/termbar.err" | tail -1 | tr '\r' '\n' | tail -1)
case $last in
"sdbatch run: interrupted" | "$ESC[Ksdbatch run: interrupted") cleared=0 ;;
*) cleared=1 ;;
esac
check "run --progress bar: the bar is cleared before the message" [ $cleared -eq 0 ]
[ $cleared -eq 0 ] || printf '# last line: %s\n' "$(printf '%s' "$last" | cat -v)"
[ $rc -eq 75 ] || diag_file "$T/termbar.err"
HF_ENDPOINT=http://127.0.0.1:$port "$BIN" run -q --config "$T/term.yaml" \
	-o "$T/t.png" "$T/job.yaml" > "$T/out" 2> "$T/term.err"; rc=$?
if [ $rc -eq 0 ] && [ -s "$T/t.png" ] && [ ! -s "$T/term.err" ]; then
	ok "run -q again: resumes the download quietly and renders"
else
	not_ok "run -q again: resumes the download quietly and renders (exit $rc)"
	diag_file "$T/term.err"
fi

# SD3 from the Hub: its T5 tokenizer (spiece.model) and a text_encoder_3 in
# shards (an index and the files it names), then a render from the cache
if [ -f "$SD3/model_index.json" ]; then
	"$BIN" pull test/tiny-sd3 > "$T/out" 2> "$T/err"; rc=$?
	snap3=$(cat "$T/out")
	check "pull of an SD3 repo exits 0 (got $rc)" [ $rc -eq 0 ]
	[ $rc -eq 0 ] || diag_file "$T/err"
	check "the SD3 snapshot has spiece.model, the index and its shard" \
		[ -f "$snap3/tokenizer_3/spiece.model" ] && \
		[ -f "$snap3/text_encoder_3/model.safetensors.index.json" ] && \
		[ -f "$snap3/text_encoder_3/model-00001-of-00001.safetensors" ]
	HF_HUB_OFFLINE=1 "$BIN" run -q --model test/tiny-sd3 -p "a red cube" --width 64 --height 64 \
		--steps 2 --seed 1 -o "$T/sd3.png" > "$T/out" 2> "$T/err"; rc=$?
	if [ $rc -eq 0 ] && [ -s "$T/sd3.png" ]; then ok "--model test/tiny-sd3 renders from the cache, T5 from shards"
	else not_ok "--model test/tiny-sd3 renders from the cache (exit $rc)"; diag_file "$T/err"; fi
	rm "$snap3/text_encoder_3/model-00001-of-00001.safetensors"
	HF_HUB_OFFLINE=1 "$BIN" run -q --model test/tiny-sd3 -p "a red cube" --width 64 --height 64 \
		--steps 2 --seed 1 -o "$T/sd3b.png" > "$T/out" 2> "$T/err"; rc=$?
	if [ $rc -ne 0 ] && grep -q "model.safetensors" "$T/err"; then
		ok "a shard missing from the cache: the model is not ready (exit $rc)"
	else
		not_ok "a shard missing from the cache: exit $rc"; diag_file "$T/err"
	fi
fi

mkdir -p "$T/spool"
if "$BIN" submit "$T/spool" "$T/job.yaml" > "$T/out" 2> "$T/err"; then
	jid=$(cat "$T/out")
	printf 'hub:\n  download: true\n  cache: %s\n' "$T/cache-watch" > "$T/watch.yaml"
	HF_ENDPOINT=http://127.0.0.1:$port "$BIN" watch --once --config "$T/watch.yaml" \
		"$T/spool" > "$T/out" 2> "$T/watch.err" &
	victim=$!
	wait_for "$T/spool/logs/$jid.jsonl" '"event":"loading".*"path":"test/tiny-sd/[a-z_]*/[a-z_]*\.safetensors"'
	check "watch: the job's log has a loading event naming the file" [ $? -eq 0 ]
	kill -TERM $victim 2>/dev/null
	wait $victim; rc=$?
	check "SIGTERM during a first-use download: watch exits 75 (got $rc)" [ $rc -eq 75 ]
	check "the job is back in incoming/" [ -f "$T/spool/incoming/$jid.yaml" ]
	grep -q "job $jid: downloading .*test/tiny-sd/" "$T/watch.err"
	check "watch says which file it downloads" [ $? -eq 0 ]
	[ $rc -eq 75 ] || diag_file "$T/watch.err"
else
	not_ok "submit to a new spool"
	diag_file "$T/err"
fi

echo "1..$n"
