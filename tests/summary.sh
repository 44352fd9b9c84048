#!/bin/sh
# Print the closing line of `make check`: "N passed, N failed[, N skipped]",
# adding up every TAP result of every test program (from test-suite.log's header).
log=${1:-test-suite.log}
[ -f "$log" ] || { echo "0 passed, 1 failed"; exit 0; }
awk '
/^# PASS:/  { p = $3 }
/^# XFAIL:/ { p += $3 }
/^# FAIL:/  { f += $3 }
/^# XPASS:/ { f += $3 }
/^# ERROR:/ { f += $3 }
/^# SKIP:/  { s = $3 }
/^# ERROR:/ { exit }
END { if (s > 0) printf "%d passed, %d failed, %d skipped\n", p, f, s; else printf "%d passed, %d failed\n", p, f }
' "$log"
