#!/bin/sh
# The CLIP tokenizer: without one, `run --model FILE` fails naming the
# `sdbatch pull` command that fetches one and the --tokenizer / config
# hint; `make install` installs one only when configure was given
# --with-tokenizer=DIR, under pkgdatadir, where sdbatch finds it by default.
. "$(dirname "$0")/spool-lib.sh"
setup
cd "$T" || exit 1
TOK=$SHARED/data/clip-tokenizer
[ -f "$TOK/vocab.json" ] || TOK=$TOKENIZER
TINY=$(cd "$TINY" && pwd)
TOK=$(cd "$TOK" && pwd)
mkdir -p home
# No tokenizer anywhere: an empty Hub cache, no configuration.
HOME=$T/home
export HOME
unset HF_HUB_CACHE HUGGINGFACE_HUB_CACHE HF_HOME XDG_CACHE_HOME SDBATCH_TOKENIZER

"$BIN" run --model "$TINY/model.safetensors" -p "a" -W 64 -H 64 --steps 1 \
    -o none.png > none.out 2> none.err; rc=$?
sed 's/^/# /' none.err
check "no tokenizer: exit 66 (got $rc)" [ $rc -eq 66 ]
check "the message names the sdbatch pull command" \
    grep -q "sdbatch pull openai/clip-vit-large-patch14" none.err
check "and --tokenizer and the configuration's tokenizer:" \
    grep -q -- "--tokenizer DIR (tokenizer: in the configuration)" none.err
check "and says where it looked" grep -q "looked at: .*$T/home/.cache/huggingface/hub" none.err

# make install with DESTDIR, as configure --with-tokenizer=DIR sets it.
[ -f "$BUILDDIR/Makefile" ] || { diag "no Makefile in $BUILDDIR"; finish; }
DEST=$T/dest
# a make of its own, not a part of the make check that runs this test
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES
make -s -C "$BUILDDIR" install DESTDIR="$DEST" TOKENIZER_SRC= > plain.out 2>&1; rc=$?
check "make install without --with-tokenizer (rc $rc)" [ $rc -eq 0 ]
check "installs no tokenizer" [ -z "$(find "$DEST" -name vocab.json)" ]
rm -rf "$DEST"
make -s -C "$BUILDDIR" install DESTDIR="$DEST" TOKENIZER_SRC="$TOK" > inst.out 2>&1; rc=$?
[ $rc -eq 0 ] || sed 's/^/# /' inst.out
check "make install DESTDIR=... with a tokenizer (rc $rc)" [ $rc -eq 0 ]
vocab=$(find "$DEST" -path '*/clip-tokenizer/vocab.json' | head -1)
check "vocab.json is installed under pkgdatadir/clip-tokenizer" [ -n "$vocab" ]
tokdir=$(dirname "${vocab:-x/x}")
check "merges.txt too" cmp -s "$tokdir/merges.txt" "$TOK/merges.txt"
check "and the same vocabulary" cmp -s "$tokdir/vocab.json" "$TOK/vocab.json"
pkgdatadir=${tokdir#"$DEST"}
pkgdatadir=${pkgdatadir%/clip-tokenizer}
diag "pkgdatadir: $pkgdatadir"
check "the installed binary is there" [ -x "$(find "$DEST" -path '*/bin/sdbatch' | head -1)" ]

# Found there by default: the installed folder seen at pkgdatadir in a
# mount namespace of its own (the real pkgdatadir is never touched).
if command -v unshare > /dev/null 2>&1 && [ "$(id -u)" = 0 ] &&
    unshare -m true 2> /dev/null; then
	top=$pkgdatadir
	while [ ! -d "$(dirname "$top")" ]; do top=$(dirname "$top"); done
	parent=$(dirname "$top")
	unshare -m sh -c '
		mount --make-rprivate / 2>/dev/null
		mount -t tmpfs tmpfs "$1" || exit 99
		mkdir -p "$2" && mount --bind "$3" "$2" || exit 99
		exec "$4" run --model "$5" -p "a" -W 64 -H 64 --steps 1 -o "$6"
	' sh "$parent" "$pkgdatadir" "$DEST$pkgdatadir" "$BIN" "$TINY/model.safetensors" \
	    "$T/found.png" > found.out 2> found.err; rc=$?
	if [ $rc -eq 99 ]; then
		diag "cannot mount in a namespace here: the default look-up not checked"
	else
		[ $rc -eq 0 ] || sed 's/^/# /' found.err
		check "run finds the installed tokenizer by default (rc $rc)" [ $rc -eq 0 ] && [ -s found.png ]
	fi
else
	diag "no unshare (or not root): the default look-up not checked"
fi

make -s -C "$BUILDDIR" uninstall DESTDIR="$DEST" TOKENIZER_SRC="$TOK" > uninst.out 2>&1; rc=$?
check "make uninstall removes it (rc $rc)" [ $rc -eq 0 ] && [ -z "$(find "$DEST" -name vocab.json)" ]

finish
