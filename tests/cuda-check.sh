#!/bin/sh
# cuda-check.sh: check the CUDA backend on a machine with a GPU.
#
# Configures a build with --enable-cuda in a temporary folder, builds
# tests/test_ops and runs it with SDBATCH_TEST_DEVICE=cuda (every op against
# plain reference loops) in these modes:
#   fp32       SDBATCH_CUDA_PRECISION=fp32, SDBATCH_CUDA_SYNC=1
#   fp16       SDBATCH_CUDA_PRECISION=fp16 (the default mode)
#   gemm-attn  fp32 with SDBATCH_CUDA_ATTENTION=gemm (the attention path used
#              for head dims over 160, e.g. the VAE's)
#   memcheck, racecheck: fp32 under compute-sanitizer, when it is installed
# and prints one table: a row per test, a column per mode, "ok" or "FAIL"
# with the max abs diff.  Then, when the shared test data are found
# (SDBATCH_SHARED, else ../shared beside the source), the engine's
# reference tests (test_clip, test_unet, test_vae, test_t5, test_mmdit,
# test_pipeline) run on
# the device in fp32 mode and must pass at the manifest tolerances, and
# test_pipeline runs once more in fp16 mode, for information: how many
# 8-bit images are within 1 level of diffusers'.  fp32 and gemm-attn must pass everything.  In fp16
# the GEMM inputs are rounded to F16, so conv2d and linear miss the test's
# F32 tolerance (1e-4) by design: there they count as "f16" (acceptable)
# while their max abs diff stays under 0.05; every other test must pass.
#
# Usage: tests/cuda-check.sh [configure arguments...]
# Environment: CUDA_PATH (toolkit, default /usr/local/cuda), KEEP=1 keeps the
# build folder, BUILD=DIR uses a build folder already configured with
# --enable-cuda and built (`make check TESTS=`) instead of making one (for
# a GPU machine without the -dev packages: carry the folder there), SDBATCH_TEST_DEVICE (default cuda, e.g. cuda:1),
# NO_SANITIZER=1 skips the compute-sanitizer runs.
# Exit status: 0 when everything passed, 1 otherwise, 77 when there is no GPU.
set -u

srcdir=$(cd "$(dirname "$0")/.." && pwd)
cuda=${CUDA_PATH:-/usr/local/cuda}
device=${SDBATCH_TEST_DEVICE:-cuda}

if [ -n "${BUILD:-}" ]; then
	build=$(cd "$BUILD" && pwd) || exit 1
	cd "$build" || exit 1
	for p in tests/test_ops tests/test_clip tests/test_unet tests/test_vae tests/test_t5 \
	    tests/test_mmdit tests/test_pipeline; do
		if [ ! -x "$p" ]; then
			echo "cuda-check: $build/$p is not built (make check TESTS=)" >&2
			exit 1
		fi
	done
	echo "cuda-check: using the build in $build"
elif [ -f "$srcdir/config.status" ]; then
	echo "cuda-check: $srcdir is configured in place; run 'make distclean' there first" >&2
	exit 1
fi
if [ -z "${BUILD:-}" ]; then
	if [ ! -x "$srcdir/configure" ]; then
		(cd "$srcdir" && autoreconf -fi) || exit 1
	fi
	build=$(mktemp -d "${TMPDIR:-/tmp}/sdbatch-cuda.XXXXXX") || exit 1
	if [ -n "${KEEP:-}" ]; then
		echo "cuda-check: build folder $build"
	else
		trap 'rm -rf "$build"' EXIT
	fi
	cd "$build" || exit 1

	echo "cuda-check: configuring and building tests/test_ops (--enable-cuda=$cuda)"
	if ! "$srcdir/configure" -q --enable-cuda="$cuda" "$@" >configure.log 2>&1; then
		tail -30 configure.log
		echo "cuda-check: configure failed" >&2
		exit 1
	fi
	jobs=$(nproc 2>/dev/null || echo 4)
	if ! make -j"$jobs" tests/test_ops tests/test_clip tests/test_unet tests/test_vae \
	    tests/test_t5 tests/test_mmdit tests/test_pipeline >make.log 2>&1; then
		tail -40 make.log
		echo "cuda-check: build failed" >&2
		exit 1
	fi
	if grep -i 'warning' make.log >/dev/null; then
		echo "cuda-check: the build printed warnings:"
		grep -i -A3 'warning' make.log | head -40
	fi
fi

sanitizer=
if [ -z "${NO_SANITIZER:-}" ]; then
	if command -v compute-sanitizer >/dev/null 2>&1; then
		sanitizer=$(command -v compute-sanitizer)
	elif [ -x "$cuda/bin/compute-sanitizer" ]; then
		sanitizer=$cuda/bin/compute-sanitizer
	fi
fi

# run NAME ENV... -- COMMAND...: output in NAME.tap, exit status in NAME.rc
run() {
	name=$1
	shift
	env SDBATCH_TEST_DEVICE="$device" "$@" >"$name.tap" 2>&1
	echo $? >"$name.rc"
	modes="$modes $name"
}

modes=
run fp32 SDBATCH_CUDA_PRECISION=fp32 SDBATCH_CUDA_SYNC=1 ./tests/test_ops
if grep '^1\.\.0 # SKIP' fp32.tap >/dev/null; then
	cat fp32.tap
	echo "cuda-check: no GPU to check on" >&2
	exit 77
fi
grep '^# backend' fp32.tap
run fp16 SDBATCH_CUDA_PRECISION=fp16 ./tests/test_ops
run gemm-attn SDBATCH_CUDA_PRECISION=fp32 SDBATCH_CUDA_ATTENTION=gemm ./tests/test_ops
if [ -n "$sanitizer" ]; then
	run memcheck SDBATCH_CUDA_PRECISION=fp32 "$sanitizer" --tool memcheck \
	    --error-exitcode 9 ./tests/test_ops
	run racecheck SDBATCH_CUDA_PRECISION=fp32 "$sanitizer" --tool racecheck \
	    --racecheck-report all --error-exitcode 9 ./tests/test_ops
else
	echo "cuda-check: compute-sanitizer not found: memcheck and racecheck not run"
fi

# One table: rows are the tests (in order), columns the modes.
status=0
for m in $modes; do
	awk -v mode="$m" -v rc="$(cat "$m.rc")" '
	/^(not )?ok [0-9]+ - / {
		ok = ($1 == "ok")
		line = $0
		sub(/^(not )?ok [0-9]+ - /, "", line)
		name = line
		sub(/ \(max abs diff.*$/, "", name)
		diff = "-"
		if (match(line, /max abs diff [^,]*/))
			diff = substr(line, RSTART + 13, RLENGTH - 13)
		cell = ok ? "ok" : "FAIL"
		if (!ok && mode == "fp16" && name ~ /^(conv2d|linear) / && diff + 0 <= 0.05)
			cell = "f16"
		if (cell == "FAIL")
			bad++
		printf "%s\t%s\t%s %s\n", mode, name, cell, diff
		n++
	}
	END {
		if (n == 0 || (rc != 0 && (mode != "fp16" || bad > 0)))
			bad++
		printf "%s\t#summary\t%d tests, exit %d, %s\n", mode, n, rc, bad ? "FAILED" : "passed"
	}' "$m.tap" >"$m.cells"
	if grep '#summary.*FAILED' "$m.cells" >/dev/null; then
		status=1
	fi
done

awk -F '\t' -v modes="$modes" '
BEGIN { nm = split(modes, mode, " ") }
{
	if (!($2 in seen)) {
		seen[$2] = 1
		order[++nr] = $2
	}
	cell[$1, $2] = $3
}
END {
	w = 54
	printf "%-" w "s", "test"
	for (i = 1; i <= nm; i++)
		printf " | %-14s", mode[i]
	printf "\n"
	for (r = 1; r <= nr; r++) {
		name = order[r]
		if (name == "#summary")
			continue
		printf "%-" w "s", substr(name, 1, w)
		for (i = 1; i <= nm; i++)
			printf " | %-14s", ((mode[i], name) in cell) ? cell[mode[i], name] : "(missing)"
		printf "\n"
	}
	for (i = 1; i <= nm; i++)
		printf "%-10s %s\n", mode[i] ":", cell[mode[i], "#summary"]
}' $(for m in $modes; do echo "$m.cells"; done)

for m in $modes; do
	if grep '#summary.*FAILED' "$m.cells" >/dev/null; then
		echo "---- $m: failures and diagnostics"
		grep -E '^not ok|^# |ERROR|Error|error' "$m.tap" | head -40
	fi
done
# The engine's reference tests on the device.
shared=${SDBATCH_SHARED:-$srcdir/../shared}
if [ -d "$shared/testdata/sd15-tiny" ]; then
	shared=$(cd "$shared" && pwd)
	echo "engine reference tests on $device (fp32, manifest tolerances):"
	for t in clip unet vae t5 mmdit pipeline; do
		env SDBATCH_SHARED="$shared" SDBATCH_TEST_DEVICE="$device" \
		    SDBATCH_CUDA_PRECISION=fp32 "./tests/test_$t" >"engine-$t.tap" 2>&1
		rc=$?
		okn=$(grep -c '^ok' "engine-$t.tap")
		bad=$(grep -c '^not ok' "engine-$t.tap")
		printf '  test_%-10s %4d ok, %d not ok, exit %d\n' "$t" "$okn" "$bad" "$rc"
		if [ "$rc" -ne 0 ] || [ "$bad" -ne 0 ] || [ "$okn" -eq 0 ]; then
			grep '^not ok' "engine-$t.tap" | head -10
			status=1
		fi
	done
	env SDBATCH_SHARED="$shared" SDBATCH_TEST_DEVICE="$device" SDBATCH_CUDA_PRECISION=fp16 \
	    ./tests/test_pipeline >engine-fp16.tap 2>&1
	n8=$(grep -c '8-bit image' engine-fp16.tap)
	w1=$(grep '8-bit image' engine-fp16.tap | grep -c ', 0 by more')
	echo "  fp16 (information): $w1 of $n8 8-bit images within 1 level of diffusers'"
else
	echo "cuda-check: no shared test data ($shared): engine reference tests not run"
fi

if [ "$status" -eq 0 ]; then
	echo "cuda-check: PASS"
else
	echo "cuda-check: FAIL"
fi
exit "$status"
