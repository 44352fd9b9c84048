# serve-lib.sh: what the serve tests share (sourced after spool-lib.sh).
#
# start_serve runs `sdbatch serve` on a free port of 127.0.0.1 and sets
# $URL; http METHOD PATH [CURL ARGS...] prints the status code and leaves
# the body in $T/body.

command -v curl > /dev/null 2>&1 || skip_all "no curl"

serve_setup() {
	setup
	"$BIN" --version | grep -q "HTTP server (serve): built in" ||
	    skip_all "sdbatch serve is not built in (no libmicrohttpd)"
	mkdir -p "$SPOOL"
}

# start_serve NAME [ARGS...]: serve in the background; its pid in
# $serve_pid, stderr in $T/NAME.err, its base URL in $URL.
start_serve() {
	_name=$1
	shift
	: > "$T/$_name.err"
	"$BIN" serve --config "$CONF" --listen 127.0.0.1:0 -v "$@" "$SPOOL" \
	    2> "$T/$_name.err" &
	serve_pid=$!
	pids="$pids $serve_pid"
	_listening() { grep -q "listening on http" "$T/$_name.err"; }
	if ! wait_for 20 _listening; then
		diag "serve did not start:"
		sed 's/^/# /' "$T/$_name.err"
		URL=
		return 1
	fi
	URL=$(sed -n 's|.*listening on \(http://[^ ]*\)/ .*|\1|p' "$T/$_name.err" | head -1)
}

stop_serve() {
	kill -TERM "$1" 2>/dev/null
	wait_for 20 exited "$1"
}

# http METHOD PATH [CURL ARGS...]: the status code on stdout, the body in
# $T/body.
http() {
	_m=$1
	_p=$2
	shift 2
	curl -s -g --path-as-is -o "$T/body" -w '%{http_code}' -X "$_m" "$@" "$URL$_p"
}

# post_json JSON [CURL ARGS...]: POST a job; the status code on stdout, the
# body in $T/body.
post_json() {
	_j=$1
	shift
	http POST /v1/jobs -H 'Content-Type: application/json' --data-binary "$_j" "$@"
}

# body_field KEY: a string field of the JSON body (one key a line).
body_field() { sed -n "s/^ *\"$1\": \"\([^\"]*\)\",\{0,1\}\$/\1/p" "$T/body" | head -1; }

# data_lines FILE: the data of the events of a stream, one a line.
data_lines() { sed -n 's/^data: //p' "$1"; }

# sanitizer_clean NAME: no ASan/UBSan report in serve's stderr.
sanitizer_clean() { ! grep -Eq 'Sanitizer|runtime error' "$T/$1.err"; }
