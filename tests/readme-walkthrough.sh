#!/bin/sh
# The README's spool walk-through, run as written (the ```sh block under
# "## The spool") in a fresh folder that has the build's src/ and the
# source's examples/, with a stand-in for the Hugging Face Hub (fakehub)
# serving the CLIP tokenizer that its `sdbatch pull` fetches.  Then every
# example job file is accepted by `submit` (its images exist, it names a
# model or takes the configured one).
. "$(dirname "$0")/spool-lib.sh"
setup
SRCDIR=${SDBATCH_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
FAKEHUB=${SDBATCH_FAKEHUB:-$BUILDDIR/tests/fakehub}
TOK=$SHARED/data/clip-tokenizer
[ -f "$TOK/vocab.json" ] || skip_all "no CLIP tokenizer in $SHARED/data"
[ -x "$FAKEHUB" ] || skip_all "no tests/fakehub"
TOK=$(cd "$TOK" && pwd)
cd "$T" || exit 1

# The walk-through, as the README has it.
awk '/^## The spool/ { s = 1; next }
    s == 1 && /^```sh$/ { s = 2; next }
    s == 2 && /^```$/ { exit }
    s == 2 { print }' "$SRCDIR/README.md" > walk.sh
check "the README has the walk-through" grep -q "submit spool examples/txt2img.yaml" walk.sh
sed 's/^/# | /' walk.sh

# The Hub's openai/clip-vit-large-patch14, as far as pull needs it.
mkdir -p root/openai/clip-vit-large-patch14
for f in vocab.json merges.txt special_tokens_map.json tokenizer_config.json; do
	[ -f "$TOK/$f" ] && ln -s "$TOK/$f" root/openai/clip-vit-large-patch14/
done
printf '{"architectures": ["CLIPModel"], "model_type": "clip"}\n' \
    > root/openai/clip-vit-large-patch14/config.json
"$FAKEHUB" -r "$T/root" -p "$T/hub.port" -l "$T/hub.log" -t 300 &
pids="$pids $!"
wait_for 10 test -s "$T/hub.port" || skip_all "fakehub did not start"
HF_ENDPOINT=http://127.0.0.1:$(cat "$T/hub.port")
HOME=$T/home
export HF_ENDPOINT HOME
unset HF_HUB_CACHE HUGGINGFACE_HUB_CACHE HF_HOME XDG_CACHE_HOME HF_HUB_OFFLINE \
    SDBATCH_TOKENIZER SDBATCH_CONFIG
mkdir -p tree home
ln -s "$BUILDDIR/src" tree/src
ln -s "$SRCDIR/examples" tree/examples

(cd tree && sh -e ../walk.sh) > walk.out 2> walk.err; rc=$?
sed 's/^/# out: /' walk.out
sed 's/^/# err: /' walk.err
check "the walk-through runs to its end (rc $rc)" [ $rc -eq 0 ]
S=tree/spool
check "the tokenizer was pulled into the Hub cache" \
    [ -f home/.cache/huggingface/hub/models--openai--clip-vit-large-patch14/refs/main ]
check "submit printed the job ids" grep -q "^txt2img$" walk.out && grep -q "^img2img$" walk.out
check "txt2img is done" [ -f $S/done/txt2img.json ] && images_ok $S/done/txt2img.json
check "img2img (street.png) is done" [ -f $S/done/img2img.json ] && images_ok $S/done/img2img.json
check "status listed them" [ "$(grep -c 'done' walk.out)" -ge 2 ]
check "ls found the PNG" grep -q '\.png$' walk.out
check "nothing failed" [ -z "$(ls $S/failed 2>/dev/null)" ]

# Every example job is accepted by submit: its files exist.
cat > ex.yaml <<EOF
model: $T/tree/tiny.safetensors
defaults: { width: 128, height: 128, steps: 4 }
policy: { secret_envs: [SDBATCH_HOOK_SECRET] }
hub: { download: true }
EOF
mkdir -p exspool
for j in "$SRCDIR"/examples/*.yaml; do
	n=$(basename "$j" .yaml)
	[ "$n" = sdbatch ] && continue
	"$BIN" submit --config ex.yaml exspool "$j" > "ex-$n.out" 2> "ex-$n.err"; rc=$?
	[ $rc -eq 0 ] || sed 's/^/# /' "ex-$n.err"
	check "examples/$n.yaml is accepted by submit (rc $rc)" [ $rc -eq 0 ]
done
# examples/sdbatch.yaml reads as a configuration: submit gets as far as
# its model (/srv/models/..., not here).
"$BIN" submit --config "$SRCDIR/examples/sdbatch.yaml" exspool \
    "$SRCDIR/examples/txt2img.yaml" > ex-conf.out 2> ex-conf.err; rc=$?
sed 's/^/# /' ex-conf.err
check "examples/sdbatch.yaml is a valid configuration (rc $rc, not 78)" \
    [ $rc -eq 66 ] && grep -q "model: .*v1-5-pruned-emaonly.safetensors.* not found" ex-conf.err

finish
