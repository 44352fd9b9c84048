# spool-lib.sh: what the spool shell tests share (sourced, POSIX sh).
#
# The tests run the real sdbatch ($SDBATCH_BIN, or $SDBATCH_TEST_BIN) with
# the tiny model of ../shared against a temporary spool, and speak TAP.
# Nothing sleeps for a fixed time to let something happen: wait_for polls
# a condition with a deadline.

BIN=${SDBATCH_TEST_BIN:-${SDBATCH_BIN:-}}
SHARED=${SDBATCH_SHARED:-../shared}
TINY=$SHARED/testdata/sd15-tiny
MODEL=$TINY/model.safetensors
TOKENIZER=$TINY/diffusers/tokenizer
BUILDDIR=$(cd "$(dirname "${BIN:-.}")/.." 2>/dev/null && pwd)
HOOKD=${SDBATCH_HOOKD:-$BUILDDIR/tests/hookd}
# One thread per process, and no OpenMP spinning: several workers share
# two cores.
OMP_NUM_THREADS=1
OMP_WAIT_POLICY=passive
export OMP_NUM_THREADS OMP_WAIT_POLICY
unset SDBATCH_CONFIG

tap_n=0
tap_failed=0
ok() { tap_n=$((tap_n + 1)); echo "ok $tap_n - $*"; }
not_ok() { tap_n=$((tap_n + 1)); tap_failed=$((tap_failed + 1)); echo "not ok $tap_n - $*"; }
diag() { echo "# $*"; }
# check DESCRIPTION COMMAND...: ok when the command succeeds.
check() {
	_d=$1
	shift
	if "$@"; then ok "$_d"; else not_ok "$_d"; fi
}
# no COMMAND...: ok when the command fails.
no() { ! "$@"; }
skip_all() { echo "1..0 # SKIP $*"; exit 0; }
finish() { echo "1..$tap_n"; exit 0; }

# wait_for SECONDS COMMAND...: poll COMMAND every 50 ms until it succeeds;
# fails after SECONDS.
wait_for() {
	_limit=$1
	shift
	_end=$(( $(date +%s) + _limit ))
	while ! "$@"; do
		[ "$(date +%s)" -ge "$_end" ] && return 1
		sleep 0.05
	done
	return 0
}

# Processes started with start_worker are killed at exit.
pids=""
cleanup() {
	for p in $pids; do kill -9 "$p" 2>/dev/null; done
	for p in $pids; do wait "$p" 2>/dev/null; done
	[ -n "${T:-}" ] && [ -z "${KEEP:-}" ] && rm -rf "$T"
}

# setup: the binary and the model must be there; makes $T, $SPOOL, $CONF.
setup() {
	[ -n "$BIN" ] && [ -x "$BIN" ] || skip_all "no sdbatch binary (SDBATCH_BIN)"
	[ -f "$MODEL" ] && [ -d "$TOKENIZER" ] || skip_all "../shared/testdata/sd15-tiny is missing"
	T=$(mktemp -d "${TMPDIR:-/tmp}/sdbatch-spool-test.XXXXXX") || exit 1
	trap cleanup EXIT
	trap 'exit 1' INT TERM
	SPOOL=$T/spool
	CONF=$T/sdbatch.yaml
	write_conf
}

# write_conf [EXTRA YAML]: the test configuration (fast, small defaults:
# euler_a, not the model's pndm, for one UNet call a step; $DEFAULTS
# replaces the defaults mapping; $POLICY the trust policy, which allows
# callbacks to 127.0.0.1 over http signed with $HOOK_SECRET).
write_conf() {
	cat > "$CONF.tmp" <<EOF
model: $MODEL
tokenizer: $TOKENIZER
threads: 1
poll_interval: 0.2
stale_after: 4
heartbeat_interval: 1
defaults: ${DEFAULTS:-{ width: 64, height: 64, steps: 2, sampler: euler_a \}}
callback: { attempts: 3, timeout: 1, total_time: 20, backoff: 0.1, backoff_max: 0.5 }
${POLICY-policy: { callback_private: true, callback_http: true, secret_envs: [HOOK_SECRET] \}}
${1:-}
EOF
	mv "$CONF.tmp" "$CONF"
}

# start_worker NAME [ARGS...]: sdbatch watch in the background; its pid in
# $worker_pid, stderr in $T/NAME.err.
start_worker() {
	_name=$1
	shift
	"$BIN" watch --config "$CONF" -v "$@" "$SPOOL" 2> "$T/$_name.err" &
	worker_pid=$!
	pids="$pids $worker_pid"
}

# job ID YAML: write a job file into the spool (staged in tmp/, renamed).
job() {
	mkdir -p "$SPOOL/tmp" "$SPOOL/incoming"
	printf '%s\n' "$2" > "$SPOOL/tmp/$1.yaml.part"
	mv "$SPOOL/tmp/$1.yaml.part" "$SPOOL/incoming/$1.yaml"
}

count_files() { ls "$1" 2>/dev/null | grep -c "$2" || true; }
has_event() { grep -q "\"event\":\"$2\"" "$SPOOL/logs/$1.jsonl" 2>/dev/null; }
events() { grep -c "\"event\":\"$2\"" "$SPOOL/logs/$1.jsonl" 2>/dev/null || echo 0; }
in_state() { [ -f "$SPOOL/$2/$1.yaml" ]; }
# json_field FILE KEY: a top-level string or number of a result record
# (pretty-printed by sdbatch: one key a line).
json_field() { sed -n "s/^  \"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" "$1" | head -1; }
# The PNG files a record lists match their sha256.
images_ok() {
	_rec=$1
	_paths=$(sed -n 's/^ *"path": "\(.*\.png\)",$/\1/p' "$_rec")
	[ -n "$_paths" ] || return 1
	for _p in $_paths; do
		[ -f "$_p" ] || return 1
		_want=$(grep -A5 "\"path\": \"$_p\"" "$_rec" | sed -n 's/^ *"sha256": "\(.*\)"$/\1/p')
		_got=$(sha256sum "$_p" | cut -d' ' -f1)
		[ "$_want" = "$_got" ] || return 1
	done
}
alive() { kill -0 "$1" 2>/dev/null; }
exited() { ! kill -0 "$1" 2>/dev/null; }
