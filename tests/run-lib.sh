# run-lib.sh: what the run-*.sh scripts share, sourced with set_name set
# to a reference set of ../shared/testdata: the binary ($bin), ../shared
# ($shared), pngcmp ($pngcmp), the set's folder ($td; without ../shared the
# whole script is a TAP skip), a temporary folder ($tmp) removed at exit,
# ok and notok counting TAP lines, the prompt and tokenizer of the
# references, and run_done, which prints the plan and gives the status.
set -u
bin=${SDBATCH_BIN:-src/sdbatch}
shared=${SDBATCH_SHARED:-../shared}
pngcmp=${PNGCMP:-tests/pngcmp}
td=$shared/testdata/$set_name
if [ ! -d "$td" ]; then
	echo "1..0 # SKIP ../shared is absent: no reference images"
	exit 0
fi
tmp=$(mktemp -d "/tmp/sdbatch-$set_name.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
prompt="a photo of an astronaut riding a horse on mars"
tok="$shared/data/clip-tokenizer"
run_done() {
	echo "1..$n"
	[ "$fails" -eq 0 ]
}

# check_png CASE MODEL [run args...]: `sdbatch run` with the reference
# prompt renders MODEL to a PNG that equals the set's image_u8 of CASE
# within one level of 255.
check_png() {
	case=$1 model=$2
	shift 2
	out="$tmp/$case.png"
	if ! "$bin" run --quiet --progress none --model "$model" --prompt "$prompt" -o "$out" "$@" \
	    > "$tmp/stdout" 2> "$tmp/stderr"; then
		notok "$case: sdbatch run failed: $(tail -1 "$tmp/stderr")"
		return
	fi
	if msg=$("$pngcmp" "$out" "$set_name/$case" image_u8); then
		ok "$case ($(basename "$model")${*:+ $*}): the PNG equals diffusers' image ($msg)"
	else
		notok "$case: $msg"
	fi
}
