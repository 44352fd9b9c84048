#!/bin/sh
# The command line: GNU --help/--version, exit statuses, `run` from flags,
# a job file and standard input, output names, PNG metadata, `submit` and
# `status`.
. "$(dirname "$0")/spool-lib.sh"
setup
cd "$T" || exit 1

"$BIN" --help > help.out; rc=$?
check "--help exits 0" [ $rc -eq 0 ]
check "--help lists the commands" grep -q "watch" help.out
"$BIN" --version > version.out; rc=$?
check "--version exits 0 and names the version" [ $rc -eq 0 ] && grep -q "^sdbatch [0-9]" version.out
check "--version says whether CUDA is built in" grep -q "CUDA support" version.out
for c in run watch submit status cancel; do
	"$BIN" $c --help > "h-$c.out"; rc=$?
	check "sdbatch $c --help exits 0 with a usage line" [ $rc -eq 0 ] && grep -q "^Usage: sdbatch $c" "h-$c.out"
done
"$BIN" help run | grep -q "^Usage: sdbatch run"
check "sdbatch help run" [ $? -eq 0 ]
"$BIN" 2> /dev/null; rc=$?
check "no command: exit 64 (got $rc)" [ $rc -eq 64 ]
"$BIN" frobnicate 2> err.out; rc=$?
check "an unknown command: exit 64 (got $rc)" [ $rc -eq 64 ] && grep -q "unknown command" err.out
"$BIN" run --bogus 2> /dev/null; rc=$?
check "an unknown option: exit 64 (got $rc)" [ $rc -eq 64 ]
"$BIN" run --config "$CONF" 2> /dev/null; rc=$?
check "run without a job: exit 64 (got $rc)" [ $rc -eq 64 ]
"$BIN" run --config "$CONF" -p x --steps many 2> /dev/null; rc=$?
check "a bad number: exit 64 (got $rc)" [ $rc -eq 64 ]
"$BIN" run --config "$CONF" -p x --sampler nope 2> /dev/null; rc=$?
check "a bad sampler: exit 64 (got $rc)" [ $rc -eq 64 ]
"$BIN" watch 2> /dev/null; rc=$?
check "watch without a spool: exit 64 (got $rc)" [ $rc -eq 64 ]
"$BIN" run --config "$CONF" -p x --device cudax 2> dev.err; rc=$?
check "--device cudax: exit 64 (got $rc)" [ $rc -eq 64 ] && grep -q -- "--device" dev.err
"$BIN" run --config "$CONF" -p x --device cuda:01 2> /dev/null; rc=$?
check "--device cuda:01: exit 64 (got $rc)" [ $rc -eq 64 ]
"$BIN" bench --device cudax 2> /dev/null; rc=$?
check "bench --device cudax: exit 64 (got $rc)" [ $rc -eq 64 ]
printf 'device: cudax\n' > dev.yaml
"$BIN" run --config dev.yaml -p x 2> dev.err; rc=$?
check "device: cudax in the configuration: exit 78 naming the key (got $rc)" \
    [ $rc -eq 78 ] && grep -q "dev.yaml:1: device" dev.err

# run from flags.
"$BIN" run --config "$CONF" -p "a red cube" -n "blurry" --seed 42 -s 2 -o cube.png > run1.out 2> run1.err; rc=$?
check "run from flags exits 0 (got $rc)" [ $rc -eq 0 ]
check "and prints the PNG's path" grep -qx "cube.png" run1.out
check "a PNG file" [ "$(head -c 8 cube.png | od -An -c | tr -d ' ')" = "211PNG\r\n032\n" ]
check "its parameters chunk, A1111's format" grep -aq "Negative prompt: blurry" cube.png
check "Steps, Sampler, CFG scale, Seed, Size, Model" \
    grep -aq "Steps: 2, Sampler: Euler a, Schedule type: Normal, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: model, RNG: CPU, Version: sdbatch" cube.png
check "and the sdbatch JSON chunk" grep -aq '"image_seed":42' cube.png
"$BIN" run --config "$CONF" -p "a red cube" -n "blurry" --seed 42 -s 2 -o cube2.png > /dev/null 2>&1
check "the same seed gives the same image" cmp -s cube.png cube2.png
"$BIN" run --config "$CONF" -p "a red cube" -n "blurry" --seed 43 -s 2 -o cube3.png > /dev/null 2>&1
check "another seed another image" no cmp -s cube.png cube3.png

# count, {seed} and {index}, a folder.
"$BIN" run --config "$CONF" -p "dots" --seed 7 -c 3 -o "out/img-{seed}.png" > run2.out 2> /dev/null; rc=$?
check "count 3 exits 0 (got $rc)" [ $rc -eq 0 ]
check "three paths, -N added without {index}" \
    [ "$(tr '\n' ' ' < run2.out)" = "out/img-7-0.png out/img-8-1.png out/img-9-2.png " ]
check "the files are there" [ -f out/img-7-0.png -a -f out/img-8-1.png -a -f out/img-9-2.png ]
"$BIN" run --config "$CONF" -p "dots" --seed 7 -c 2 -o "out2/{index}.png" > run3.out 2> /dev/null
check "{index} names" [ "$(tr '\n' ' ' < run3.out)" = "out2/0.png out2/1.png " ]
# The pixels of a small PNG: its one IDAT chunk.
idat() {
	_off=$(grep -abo IDAT "$1" | head -1 | cut -d: -f1)
	_len=$(od -An -tu1 -j $((_off - 4)) -N4 "$1" | awk '{ print $1*16777216 + $2*65536 + $3*256 + $4 }')
	tail -c +$((_off + 5)) "$1" | head -c "$_len"
}
"$BIN" run --config "$CONF" -p dots --seed 8 -o one.png > /dev/null 2>&1
idat out/img-8-1.png > idat1; idat one.png > idat2
check "image 1 of seed 7 has the pixels of image 0 of seed 8" cmp -s idat1 idat2
check "(and a seed-7 image does not)" no cmp -s idat1 "$(idat out/img-7-0.png > idat3; echo idat3)"

# run from a job file and from standard input.
mkdir jobs
cat > jobs/robot.yaml <<EOF
prompt: "a robot"
seed: 3
steps: 2
output: { name: "{id}-{seed}.png" }
EOF
"$BIN" run --config "$CONF" jobs/robot.yaml > run4.out 2> /dev/null; rc=$?
check "run JOB.yaml exits 0 (got $rc)" [ $rc -eq 0 ]
check "the job's output name" grep -qx "./robot-3.png" run4.out
"$BIN" run --config "$CONF" --seed 4 jobs/robot.yaml > run5.out 2> /dev/null
check "a flag replaces the job's field" grep -qx "./robot-4.png" run5.out
printf 'prompt: "from stdin"\nseed: 5\n' | "$BIN" run --config "$CONF" -o stdin.png - > run6.out 2> /dev/null; rc=$?
check "run - reads standard input (exit $rc)" [ $rc -eq 0 ] && [ -f stdin.png ]
printf 'prompt: a\nwidth: 100\n' > jobs/bad.yaml
"$BIN" run --config "$CONF" jobs/bad.yaml 2> bad.err; rc=$?
check "a bad job: exit 65 (got $rc)" [ $rc -eq 65 ]
check "the message names file, line and field" grep -q "jobs/bad.yaml:2: width: 100 is not a multiple of 8" bad.err
"$BIN" run --config "$CONF" nothere.yaml 2> /dev/null; rc=$?
check "a missing job file: exit 66 (got $rc)" [ $rc -eq 66 ]
"$BIN" run --config "$CONF" --model nothere.safetensors -p x 2> nomodel.err; rc=$?
check "a missing model: exit 66 (got $rc)" [ $rc -eq 66 ]
check "the message says where it looked" grep -q "looked at" nomodel.err
printf 'threads: lots\n' > bad.yaml
"$BIN" run --config bad.yaml -p x 2> badconf.err; rc=$?
check "a bad configuration: exit 78 (got $rc)" [ $rc -eq 78 ]
check "the message names the file, line and key" grep -q "bad.yaml:1: threads: expected an integer" badconf.err
SDBATCH_CONFIG=$T/bad.yaml "$BIN" run -p x 2> /dev/null; rc=$?
check "\$SDBATCH_CONFIG is read (exit $rc)" [ $rc -eq 78 ]
"$BIN" run --config "$CONF" --progress json -p "json progress" -s 3 -o p.png > /dev/null 2> progress.err
check "--progress json: step events on stderr" [ "$(grep -c '"event":"step"' progress.err)" -eq 3 ]
check "every line is a JSON object with time, job, event" \
    [ "$(grep -c '^{"time":"[0-9T:.-]*Z","job":"job","event":"' progress.err)" -eq "$(wc -l < progress.err)" ]

# --unet/--vae with a job file that names them too: a flag's relative path
# is relative to the current folder, not to the job file's.
mkdir -p flagdir/jobs
ln -s "$MODEL" flagdir/here.safetensors
ln -s "$MODEL" flagdir/jobs/beside-job.safetensors
printf 'prompt: "flags"\nsteps: 1\nunet: beside-job.safetensors\nvae: beside-job.safetensors\n' \
    > flagdir/jobs/j.yaml
(cd flagdir && "$BIN" run --config "$CONF" --unet here.safetensors --vae here.safetensors \
    -o ../flag.png jobs/j.yaml) > /dev/null 2> flag.err; rc=$?
check "--unet/--vae over a job's: relative to the current folder (exit $rc)" [ $rc -eq 0 ]
[ $rc -eq 0 ] || sed 's/^/# /' flag.err
(cd flagdir && "$BIN" run --config "$CONF" --vae beside-job.safetensors \
    -o ../flag2.png jobs/j.yaml) > /dev/null 2> flag2.err; rc=$?
check "--vae is not looked for beside the job file: exit 66 (got $rc)" \
    [ $rc -eq 66 ] && grep -q "flagdir/beside-job.safetensors" flag2.err

# submit and status.
mkdir -p "$SPOOL"
"$BIN" submit --config "$CONF" "$SPOOL" jobs/robot.yaml > sub1.out; rc=$?
check "submit exits 0 and prints the id" [ $rc -eq 0 ] && grep -qx robot sub1.out
"$BIN" submit --config "$CONF" "$SPOOL" jobs/robot.yaml 2> sub2.err; rc=$?
check "the same id again: exit 65 (got $rc)" [ $rc -eq 65 ] && grep -q "exists already" sub2.err
"$BIN" submit --config "$CONF" "$SPOOL" jobs/bad.yaml 2> sub3.err; rc=$?
check "submit checks the job: exit 65 (got $rc)" [ $rc -eq 65 ]
check "nothing of it was queued" [ ! -e "$SPOOL/incoming/bad.yaml" ]
"$BIN" submit "$T/no-spool" jobs/robot.yaml 2> /dev/null; rc=$?
check "submit to a missing spool: exit 66 (got $rc)" [ $rc -eq 66 ]
printf 'prompt: "img2img"\ninit_image: in.png\nstrength: 0.5\n' > jobs/rel.yaml
cp cube.png jobs/in.png
"$BIN" submit --config "$CONF" "$SPOOL" jobs/rel.yaml > /dev/null
check "submit makes relative paths absolute" grep -q "init_image: \"$T/jobs/in.png\"" "$SPOOL/incoming/rel.yaml"
"$BIN" status "$SPOOL" > st1.out; rc=$?
check "status exits 0" [ $rc -eq 0 ]
check "status lists queued jobs" grep -q "^robot .*queued" st1.out
check "and a summary line" grep -q "^2 queued, 0 running, 0 done, 0 failed" st1.out
"$BIN" watch --once --config "$CONF" "$SPOOL" 2> /dev/null
"$BIN" status --json "$SPOOL" > st2.out
check "status --json: the jobs are done" [ "$(grep -c '"state": "done"' st2.out)" -eq 2 ]
"$BIN" status --json "$SPOOL" robot > st3.out; rc=$?
check "status --json ID: one job with its result" [ $rc -eq 0 ] && grep -q '"result": {' st3.out
check "img2img from the submitted job ran" grep -q '"strength": 0.5' "$SPOOL/done/rel.json"
"$BIN" status "$SPOOL" nosuch 2> /dev/null; rc=$?
check "status of an unknown job: exit 66 (got $rc)" [ $rc -eq 66 ]
"$BIN" status "$T/no-spool" 2> /dev/null; rc=$?
check "status of a missing spool: exit 66 (got $rc)" [ $rc -eq 66 ]
finish
