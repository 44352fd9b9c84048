#!/bin/sh
# The gallery in a real browser: Debian's chromium, headless, loads the page
# that `sdbatch serve` serves and the static one that `sdbatch gallery`
# writes; the test checks their DOM (one card per image, with its prompt
# and parameters; failed jobs with their error) and keeps a screenshot of
# each in tests/artifacts/ (SDBATCH_ARTIFACTS overrides).  Without chromium
# the browser checks are skipped (SKIP), the rest still runs.
. "$(dirname "$0")/spool-lib.sh"
. "$(dirname "$0")/serve-lib.sh"
serve_setup

ART=${SDBATCH_ARTIFACTS:-$BUILDDIR/tests/artifacts}
mkdir -p "$ART"
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)

# Three jobs: one image, two images (count 2), and one that fails.
job g1 'prompt: "a red fox in the snow, <b>bold</b> & co"
negative_prompt: "blurry, low quality"
seed: 11
steps: 3'
job g2 'prompt: "a lighthouse on a cliff at dusk"
seed: 21
count: 2
sampler: euler'
job g3 'prompt: "this one fails"
init_image: /nonexistent/input.png
strength: 0.5'
"$BIN" watch --once --config "$CONF" "$SPOOL" 2> "$T/worker.err"
check "the three jobs ran (two done, one failed)" \
    sh -c "[ -f '$SPOOL/done/g1.json' -a -f '$SPOOL/done/g2.json' -a -f '$SPOOL/failed/g3.json' ]"
# A job still queued: the page lists it in progress.
job g4 'prompt: "still queued"'

start_serve s1 || { not_ok "serve starts"; finish; }
code=$(http GET /)
cp "$T/body" "$T/served.html"
check "GET /: 200 (got $code)" [ "$code" = 200 ]
check "served page: 3 cards" [ "$(grep -c '<figure class="card"' "$T/served.html")" -eq 3 ]
check "the prompt is escaped" grep -q 'a red fox in the snow, &lt;b&gt;bold&lt;/b&gt; &amp; co' "$T/served.html"
check "the queued job is in progress" grep -q 'class="active queued" data-job="g4"' "$T/served.html"
check "no external fetches (no http(s) URL in src or href)" \
    sh -c "! grep -Eq '(src|href)=\"(https?:)?//' '$T/served.html'"
code=$(http GET /v1/jobs/g2/images/1.png)
check "the card's image URL serves the PNG" [ "$code" = 200 ]

"$BIN" gallery --config "$CONF" "$SPOOL" -o "$T/gallery" > "$T/gallery.out"; rc=$?
check "sdbatch gallery exits 0 (got $rc)" [ $rc -eq 0 ]
check "and says how many images" grep -q "index.html: 3 images" "$T/gallery.out"
check "static page: 3 cards" [ "$(grep -c '<figure class="card"' "$T/gallery/index.html")" -eq 3 ]
check "static page: no script" sh -c "[ -s '$T/gallery/index.html' ] && ! grep -qi '<script' '$T/gallery/index.html'"
check "static page: the images beside it" \
    sh -c "cmp -s '$T/gallery/images/g2-1.png' \"\$(sed -n 's/^ *\"path\": \"\\(.*-1.png\\)\",\$/\\1/p' '$SPOOL/done/g2.json')\""
# png_width FILE: the width in a PNG's IHDR.
png_width() { od -An -tu1 -j16 -N4 "$1" | awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4 }'; }
check "static page: the Render again line holds the job's fields as run flags (sampler, prediction)" \
    sh -c "grep -q 'sdbatch run .*--prompt .*a lighthouse on a cliff at dusk.*--sampler euler .*--prediction epsilon' '$T/gallery/index.html'"
check "static page: a thumbnail a card" [ "$(ls "$T/gallery/thumbs" | wc -l)" -eq 3 ]
check "thumbnails are PNGs of the image's size when it is small (64)" \
    [ "$(png_width "$T/gallery/thumbs/g2-1.png")" = 64 ]
code=$(http GET '/v1/jobs/g2/images/1.png?size=32')
check "GET .../images/1.png?size=32: a 32-pixel thumbnail (got $code)" \
    [ "$code" = 200 -a "$(png_width "$T/body")" = 32 ]
check "the served page's thumbnails" grep -q 'img src="/v1/jobs/g2/images/1.png?size=320"' "$T/served.html"
"$BIN" gallery "$SPOOL" 2> /dev/null; rc=$?
check "sdbatch gallery without -o: exit 64 (got $rc)" [ $rc -eq 64 ]

if [ -z "$CHROMIUM" ]; then
	echo "ok $((tap_n + 1)) # SKIP no chromium: the browser checks"
	tap_n=$((tap_n + 1))
	stop_serve "$serve_pid"
	finish
fi

# chromium URL OUT-PREFIX: the DOM after the page ran (OUT.dom) and a
# screenshot (OUT.png).
browse() {
	_prof=$T/chrome-profile
	timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu \
	    --disable-dev-shm-usage --no-first-run --user-data-dir="$_prof" \
	    --dump-dom "$1" > "$2.dom" 2> "$2.err"
	timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu \
	    --disable-dev-shm-usage --no-first-run --user-data-dir="$_prof" \
	    --hide-scrollbars --window-size=1280,1000 \
	    --screenshot="$2.png" "$1" > /dev/null 2>> "$2.err"
}
# cards FILE: one line a card: its job, index and prompt.
cards() {
	tr -d '\n' < "$1" | sed 's|<figure|\n<figure|g' | grep '^<figure class="card"' |
	    sed 's|^<figure class="card" data-job="\([^"]*\)" data-index="\([0-9]*\)">.*<p class="prompt">\([^<]*\)</p>.*|\1 \2 \3|'
}

browse "$URL/" "$T/served"
check "chromium loaded the served page" grep -q '<h1>sdbatch gallery</h1>' "$T/served.dom"
cards "$T/served.dom" > "$T/served.cards"
diag "served cards: $(tr '\n' '|' < "$T/served.cards")"
check "served DOM: one card per image, newest job first" [ "$(cat "$T/served.cards")" = "g2 0 a lighthouse on a cliff at dusk
g2 1 a lighthouse on a cliff at dusk
g1 0 a red fox in the snow, &lt;b&gt;bold&lt;/b&gt; &amp; co" ]
check "served DOM: seed, sampler, steps, size of each card" \
    sh -c "tr -d '\n' < '$T/served.dom' | grep -q '<dd class=\"seed\">22</dd><dt>Sampler</dt><dd class=\"sampler\">euler</dd><dt>Steps</dt><dd class=\"steps\">2</dd>.*<dd class=\"size\">64x64</dd>'"
check "served DOM: the negative prompt" grep -q 'blurry, low quality' "$T/served.dom"
check "served DOM: the failed job with its error" \
    sh -c "grep -q 'data-job=\"g3\"' '$T/served.dom' && grep -q 'nonexistent/input.png' '$T/served.dom'"
check "served DOM: a Redo button a card" [ "$(grep -o 'class="redo-button"' "$T/served.dom" | wc -l)" -eq 3 ]
check "served DOM: the queued job's progress bar" grep -q '<progress' "$T/served.dom"
check "the screenshot of the served page" [ -s "$T/served.png" ]
cp "$T/served.png" "$ART/serve-gallery.png" 2>/dev/null

browse "file://$T/gallery/index.html" "$T/static"
cards "$T/static.dom" > "$T/static.cards"
check "static DOM: the same cards" cmp -s "$T/served.cards" "$T/static.cards"
check "static DOM: thumbnails from thumbs/, links to images/" \
    sh -c "grep -q '<a href=\"images/g2-1.png\"><img src=\"thumbs/g2-1.png\"' '$T/static.dom'"
check "the screenshot of the static page" [ -s "$T/static.png" ]
cp "$T/static.png" "$ART/gallery-static.png" 2>/dev/null
diag "screenshots: $ART/serve-gallery.png $ART/gallery-static.png"

# Live progress: the served page follows a running job over its stream
# (its progress bar moves past where the page was rendered), and shows the
# job's image once it is done (the page reloads itself).
CDP=$BUILDDIR/tests/cdp
if [ -x "$CDP" ]; then
	job live 'prompt: "followed live"
width: 256
height: 256
steps: 150'
	start_worker w1
	livestep() { grep -q '"event":"step"' "$SPOOL/logs/live.jsonl" 2>/dev/null; }
	check "the live job runs" wait_for 120 livestep
	moving='(function(){var p=document.querySelector("li.running[data-job=live] progress");
if(!p)return "no bar";if(window.v0===undefined)window.v0=p.value;
var t=document.querySelector("li.running[data-job=live] .state").textContent;
return p.value>=window.v0+3&&/^step [0-9]+\/150$/.test(t);})()'
	v=$("$CDP" "$CHROMIUM" "$T/cdp1" "$URL/" "$moving" 120); rc=$?
	check "the page's progress bar follows the job live (got $v)" [ $rc -eq 0 ]
	"$CDP" "$CHROMIUM" "$T/cdp2" "$URL/" \
	    'document.querySelectorAll("figure.card[data-job=live]").length===1' 180 > /dev/null; rc=$?
	check "when it is done, the page shows its image" [ $rc -eq 0 ]
	kill -TERM "$worker_pid" 2>/dev/null
else
	echo "ok $((tap_n + 1)) # SKIP no tests/cdp: the live progress checks"
	tap_n=$((tap_n + 1))
fi
stop_serve "$serve_pid"
check "no sanitizer report from serve" sanitizer_clean s1
finish
