#!/bin/sh
# The systemd units and the cron file of contrib/ (made by make from their
# .in files): they start the binary where `make install` puts it and name
# the configuration the binary reads by default (one path: sysconfdir);
# systemd-analyze verify accepts them (where systemd is installed); and the
# worker unit, followed as its comments say under a scratch root, starts,
# runs a job and stops with an exit status the unit counts as success.
. "$(dirname "$0")/spool-lib.sh"
setup
cd "$T" || exit 1
[ -f "$BUILDDIR/contrib/sdbatch.service" ] || skip_all "contrib/sdbatch.service is not built"
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES
U=$BUILDDIR/contrib

for f in sdbatch.service sdbatch-gpu@.service sdbatch-serve.service sdbatch.cron; do
	check "$f: every @...@ replaced" sh -c "! grep -Eq '@(bindir|sysconfdir|prefix)@' '$U/$f'"
done

# One configuration path: the binary's default is the units'.
conf=$("$BIN" run --help | sed -n 's/.* \(\/[^ ]*\/sdbatch\/sdbatch.yaml\) if present.*/\1/p' | head -1)
diag "the binary's default configuration: $conf"
check "the binary names a default configuration" [ -n "$conf" ]
for f in sdbatch.service sdbatch-gpu@.service sdbatch-serve.service sdbatch.cron; do
	check "$f names the same configuration" grep -q "SDBATCH_CONFIG=$conf\$" "$U/$f"
done
check "sdbatch.yaml(5) names it" grep -q "^\\.I $conf\$" "${SDBATCH_SRCDIR:-$BUILDDIR}/man/sdbatch.yaml.5"

# The binary the units start is where make install puts it.
DEST=$T/dest
make -s -C "$BUILDDIR" install DESTDIR="$DEST" > inst.out 2>&1; rc=$?
[ $rc -eq 0 ] || sed 's/^/# /' inst.out
check "make install DESTDIR=... (rc $rc)" [ $rc -eq 0 ]
exe=$(sed -n 's/^ExecStart=\([^ ]*\) .*/\1/p' "$U/sdbatch.service")
check "ExecStart's binary ($exe) is installed there" [ -x "$DEST$exe" ]
for f in sdbatch-gpu@.service sdbatch-serve.service; do
	check "$f starts the same binary" grep -q "^ExecStart=$exe " "$U/$f"
done
check "the cron file's PATH has its folder" grep -q "^PATH=$(dirname "$exe"):" "$U/sdbatch.cron"
check "the units are installed with the documentation" \
    [ -n "$(find "$DEST" -name sdbatch.service -path '*/contrib/*')" ]

# systemd's own check, with the installed binary seen at its path.
if command -v systemd-analyze > /dev/null 2>&1 && [ "$(id -u)" = 0 ] &&
    unshare -m true 2> /dev/null; then
	bindir=$(dirname "$exe")
	unshare -m sh -c '
		mount --make-rprivate / 2>/dev/null
		[ -d "$1" ] || exit 99
		mount --bind "$2" "$1" || exit 99
		shift 2
		systemd-analyze verify "$@"
	' sh "$bindir" "$DEST$bindir" "$U/sdbatch.service" "$U/sdbatch-serve.service" \
	    "$U/sdbatch-gpu@.service" > verify.out 2>&1; rc=$?
	# man pages are not installed on this machine: not the units' fault
	grep -v "Command 'man " verify.out | grep -v '^$' > verify.real
	sed 's/^/# /' verify.out
	if [ $rc -eq 99 ]; then
		diag "cannot mount in a namespace: systemd-analyze verify not run"
	else
		check "systemd-analyze verify finds nothing wrong" [ ! -s verify.real ]
	fi
else
	diag "no systemd-analyze (or no mount namespace): the units not verified"
fi

# The worker unit as its comments say, under a scratch root $T/root:
# the spool folder, the configuration, then ExecStart with the unit's
# Environment=.
R=$T/root
spool=$(sed -n 's/^ExecStart=[^ ]* watch \(.*\)$/\1/p' "$U/sdbatch.service")
check "ExecStart runs watch on a spool ($spool)" [ -n "$spool" ]
steps=$(sed -n 's/^#   //p' "$U/sdbatch.service")
check "the comments create the spool folder" sh -c "printf '%s\n' \"\$1\" | grep -q '^install -d .*$spool\$'" sh "$steps"
check "and the configuration" sh -c "printf '%s\n' \"\$1\" | grep -q \"> $conf\$\"" sh "$steps"
mkdir -p "$R$spool" "$R$(dirname "$conf")"
printf 'model: %s\ntokenizer: %s\ndefaults: { width: 64, height: 64, steps: 1 }\n' \
    "$(cd "$TINY" && pwd)/model.safetensors" "$(cd "$TOKENIZER" && pwd)" > "$R$conf"
envs=$(sed -n 's/^Environment=//p' "$U/sdbatch.service" | sed "s|$conf|$R$conf|")
env $envs "$BIN" watch -v "$R$spool" 2> unit.err &
wpid=$!
pids="$pids $wpid"
printf 'prompt: "from the unit"\n' > unit.yaml
"$BIN" submit --config "$R$conf" "$R$spool" unit.yaml > /dev/null 2> submit.err
check "a job submitted to the unit's spool is done" wait_for 120 test -f "$R$spool/done/unit.json"
kill -TERM $wpid
wait $wpid; rc=$?
ok_status=$(sed -n 's/^SuccessExitStatus=//p' "$U/sdbatch.service")
check "SIGTERM: exit $rc, which the unit counts as success (0 $ok_status)" \
    sh -c "[ $rc -eq 0 ] || printf ' %s ' '$ok_status' | grep -q ' $rc '"
[ -f "$R$spool/done/unit.json" ] || sed 's/^/# /' unit.err submit.err

finish
