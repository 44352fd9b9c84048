#!/bin/sh
# Slurm for real: contrib/sdbatch-slurm.sh under a single-node Slurm that
# this test starts (Debian's slurm-wlm and munge: a generated munge key, this
# host as controller and compute node, everything under a temporary folder,
# stopped at the end), with the tiny model:
#  - a 3-task array over one spool of 12 jobs: all done, each exactly once,
#    by every task, each task's output naming its array index;
#  - `scancel --signal=TERM` reaches no process of the script (it starts no
#    job step), `scancel --batch --signal=TERM` its shell only, which does
#    not pass it on; `scancel --full --signal=TERM` and `scancel --batch
#    --signal=USR1` in the middle of a job: the job is requeued (the exit 75
#    path, the task COMPLETED) and finished by the next task;
#  - a failed job: `watch --once` exits 65, the task is FAILED with exit
#    code 65 in `scontrol show job` and in `sacct` (job completion log);
#  - a time limit shorter than the job: with the script's early warning
#    (SIGUSR1 to the shell), and without it (Slurm's SIGTERM to every
#    process, SIGKILL KillWait seconds later): requeued before the SIGKILL;
#  - preemption (PreemptMode=REQUEUE): the job is requeued, and the task,
#    run again by Slurm, finishes it.
# Without root, the Slurm daemons or munge, or where they do not start, it
# says SKIP with the reason.  Every wait has a deadline.
. "$(dirname "$0")/spool-lib.sh"

SCRIPT=$(cd "$(dirname "$0")/../contrib" 2>/dev/null && pwd)/sdbatch-slurm.sh
[ "$(id -u)" -eq 0 ] || skip_all "not root (the test runs slurmctld and slurmd as root)"
for c in munged slurmctld slurmd sbatch scontrol scancel squeue sinfo sacct; do
	command -v "$c" > /dev/null 2>&1 ||
	    skip_all "no $c (Debian packages slurm-wlm and munge)"
done
[ -f "$SCRIPT" ] || skip_all "no contrib/sdbatch-slurm.sh"
# The tasks run in another folder: the paths must be absolute.
case $BIN in
'' | /*) ;;
*) BIN=$(pwd)/$BIN ;;
esac
SHARED=$(cd "$SHARED" 2>/dev/null && pwd) || skip_all "no $SHARED"
TINY=$SHARED/testdata/sd15-tiny
MODEL=$TINY/model.safetensors
TOKENIZER=$TINY/diffusers/tokenizer
setup

# The tasks see this environment (sbatch passes it on); nothing of an outer
# Slurm job may leak into the test cluster.
for v in $(env | sed -n 's/^\(S\{0,1\}\(SLURM\|SBATCH\|SQUEUE\|SINFO\|SACCT\|SCANCEL\)_[A-Za-z0-9_]*\)=.*/\1/p'); do
	unset "$v"
done
SL=$T/slurm
SLURM_CONF=$SL/slurm.conf
SDBATCH=$BIN
SDBATCH_CONFIG=$CONF
export SLURM_CONF SDBATCH SDBATCH_CONFIG
DEFAULTS='{ width: 64, height: 64, steps: 30, sampler: euler_a }' write_conf 'limits: { steps: 1000 }'

# ---- the cluster ------------------------------------------------------------
# free_port [NOT]: a free TCP port between 20000 and 59999 (not listed in
# /proc/net/tcp*), other than NOT.
free_port() {
	_i=0
	while [ $_i -lt 50 ]; do
		_p=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000 ))
		_hex=$(printf '%04X' "$_p")
		if [ "$_p" != "${1:-}" ] && ! cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
		    awk '{ print $2 }' | grep -qi ":$_hex\$"; then
			echo "$_p"
			return 0
		fi
		_i=$((_i + 1))
	done
	return 1
}

daemon_pids=""
slurm_stop() {
	if [ -n "$daemon_pids" ]; then
		# Cancel what runs (SIGTERM to every process: sdbatch requeues
		# and leaves), and wait for the tasks to end before the daemons.
		_ids=$(squeue -h -o %A 2>/dev/null)
		[ -n "$_ids" ] && scancel $_ids 2>/dev/null
		wait_for 40 no_tasks
	fi
	for _p in $daemon_pids; do kill -TERM "$_p" 2>/dev/null; done
	for _p in $daemon_pids; do
		wait_for 15 exited "$_p" || kill -9 "$_p" 2>/dev/null
		wait "$_p" 2>/dev/null
	done
	daemon_pids=""
}
no_tasks() { [ -z "$(squeue -h -o %A 2>/dev/null)" ]; }
trap 'slurm_stop; cleanup' EXIT
# cannot_start REASON: the daemons' last words, then SKIP.
cannot_start() {
	for _f in "$SL"/log/*.log; do
		[ -f "$_f" ] && tail -n 5 "$_f" | sed "s|^|# $(basename "$_f"): |"
	done
	slurm_stop
	skip_all "$1"
}

mkdir -p "$SL/munge" "$SL/run" "$SL/state" "$SL/spool" "$SL/log" || exit 1
# munged wants its socket folder searchable by all, its key private.
chmod 755 "$T" "$SL" "$SL/run"
chmod 700 "$SL/munge"
dd if=/dev/urandom of="$SL/munge/munge.key" bs=1024 count=1 2> /dev/null &&
    chmod 400 "$SL/munge/munge.key" || cannot_start "cannot write a munge key"
munged -F --key-file="$SL/munge/munge.key" --socket="$SL/run/munge.socket" \
    --pid-file="$SL/run/munged.pid" --seed-file="$SL/munge/munged.seed" \
    --log-file="$SL/log/munged.log" 2>> "$SL/log/munged.log" &
daemon_pids="$!"
munge_up() { munge -n -S "$SL/run/munge.socket" 2>/dev/null | unmunge -S "$SL/run/munge.socket" > /dev/null 2>&1; }
wait_for 20 munge_up || cannot_start "munged does not start"

HOST=$(hostname -s 2>/dev/null || hostname)
CTLD_PORT=$(free_port) && SLURMD_PORT=$(free_port "$CTLD_PORT") ||
    cannot_start "no free TCP port"
cat > "$SLURM_CONF" <<EOF
ClusterName=sdbatchtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SL/run/munge.socket
StateSaveLocation=$SL/state
SlurmdSpoolDir=$SL/spool
SlurmctldPidFile=$SL/run/slurmctld.pid
SlurmdPidFile=$SL/run/slurmd.pid
SlurmctldLogFile=$SL/log/slurmctld.log
SlurmdLogFile=$SL/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SL/log/jobcomp.txt
MpiDefault=none
ReturnToService=2
KillWait=20
MinJobAge=600
SlurmdParameters=config_overrides
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes=$HOST Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=$HOST MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
EOF
slurmctld -D -f "$SLURM_CONF" 2>> "$SL/log/slurmctld.log" &
daemon_pids="$! $daemon_pids"
slurmd -D -f "$SLURM_CONF" 2>> "$SL/log/slurmd.log" &
daemon_pids="$! $daemon_pids"
node_idle() { [ "$(sinfo -h -N -p test -o %t 2>/dev/null)" = idle ]; }
if ! wait_for 60 node_idle; then
	for _p in $daemon_pids; do
		exited "$_p" && cannot_start "a Slurm daemon exited at its start"
	done
	cannot_start "the node does not come up idle: $(sinfo -h -N -p test -o '%t %E' 2>&1 | head -1)"
fi
diag "Slurm $(sinfo -V 2>/dev/null | cut -d' ' -f2) on $HOST, ports $CTLD_PORT and $SLURMD_PORT"
ok "a single-node Slurm runs (munged, slurmctld, slurmd)"

# ---- helpers ------------------------------------------------------------------
start_s=$(date +%s)
# section TITLE: a TAP comment with the seconds since the cluster came up.
section() { diag "$(( $(date +%s) - start_s )) s: $*"; }
OUT=$T/out
mkdir -p "$OUT"
# submit SPOOL SBATCH-OPTIONS...: the script as a batch job, its id on stdout;
# resources fit the test node, the rest is the script's own (--output
# lands in $OUT).
submit() {
	_s=$1
	shift
	sbatch --parsable --chdir="$OUT" --cpus-per-task=1 --mem=64M "$@" "$SCRIPT" "$_s" \
	    2>> "$T/sbatch.err" | cut -d';' -f1
}
# field ID NAME: a field of `scontrol show job ID` (one task).
field() { scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
running() { [ "$(field "$1" JobState)" = RUNNING ]; }
ended() {
	case $(field "$1" JobState) in
	COMPLETED|FAILED|TIMEOUT|CANCELLED|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|BOOT_FAIL|DEADLINE) return 0 ;;
	esac
	return 1
}
# out ID: a task's output (the script's sdbatch-%A_%a.out; %a is 4294967294
# for a job that is not an array).
out() {
	case $1 in
	*_*) cat "$OUT/sdbatch-$1.out" 2>/dev/null ;;
	*) cat "$OUT/sdbatch-$1_4294967294.out" 2>/dev/null ;;
	esac
}
# running_step ID N: the job runs, and its current run has reached step N.
running_step() {
	awk '/"event":"(claimed|requeued|done|failed|cancelled)"/ { s = 0 } /"event":"step"/ && index($0, "\"step\":'"$2"',") { s = 1 }
	    END { exit !s }' "$SPOOL/logs/$1.jsonl" 2>/dev/null
}
last_step() {
	_s=$(grep '"event":"step"' "$SPOOL/logs/$1.jsonl" 2>/dev/null | tail -1 |
	    sed 's/.*"step":\([0-9]*\),.*/\1/')
	echo "${_s:-0}"
}
# one_state ID STATE: the job is in STATE/ and in no other folder.
one_state() {
	_n=0
	for _st in incoming running done failed; do
		[ -f "$SPOOL/$_st/$1.yaml" ] && _n=$((_n + 1))
	done
	[ "$_n" -eq 1 ] && in_state "$1" "$2" && [ ! -e "$SPOOL/running/$1.claim" ]
}
# nevents ID EVENT: how many times the job's log has EVENT.
nevents() {
	_c=$(grep -c "\"event\":\"$2\"" "$SPOOL/logs/$1.jsonl" 2>/dev/null)
	echo "${_c:-0}"
}
tasks=0
signals=0
LONG='prompt: "a long job"
width: 128
height: 128
steps: 1000
count: 12'

# ---- time limits: submitted first, they run while the rest goes on ----------
# slurmctld checks time limits every 30 s: a 1-minute limit ends a task 60 to
# 90 s after its start.  The job (12 images of 1000 steps, 2 minutes or more
# on a quiet 2-core machine) needs far longer.
section "time limits submitted"
SPOOL=$T/spool-limit
job long "$LONG"
# --signal=B:USR1@0: no early warning, so that the time limit itself ends it.
tl=$(submit "$SPOOL" --time=1 --signal=B:USR1@0)
# The script's own warning, --signal=B:USR1@120, comes when less than 120 s
# (plus the 30 s of the check) are left: with a 3-minute limit, 30 to 60 s
# after the start, once sdbatch runs the job.
SPOOL=$T/spool-warned
job long "$LONG"
tw=$(submit "$SPOOL" --time=3)
tasks=$((tasks + 2))
check "two tasks with a time limit are submitted" [ -n "$tl" -a -n "$tw" ]

# ---- a failed job fails the task (checked below) ---------------------------
SPOOL=$T/spool-failed
job bad 'prompt: "broken"
width: [64'
job good 'prompt: "fine"'
touch -d "@$(( $(date +%s) + 5 ))" "$SPOOL/incoming/good.yaml"
f1=$(submit "$SPOOL")
tasks=$((tasks + 1))

# ---- a 3-task array over one spool of 12 jobs (checked below) ---------------
SPOOL=$T/spool-array
i=1
while [ $i -le 12 ]; do
	job "a$i" "prompt: \"array job $i\"
seed: $i"
	i=$((i + 1))
done
arr=$(submit "$SPOOL" --array=0-2)
tasks=$((tasks + 3))
check "a 3-task array is submitted ($arr)" [ -n "$arr" ]
array_ended() { ended "${arr}_0" && ended "${arr}_1" && ended "${arr}_2"; }

# ---- scancel in the middle of a job --------------------------------------------
section "scancel"
SPOOL=$T/spool-cancel
job slow 'prompt: "a slow job"
width: 128
height: 128
steps: 1000'
s1=$(submit "$SPOOL")
tasks=$((tasks + 1))
check "a task runs the slow job" wait_for 90 running_step slow 2
# Without --full or --batch, scancel signals job steps only: none here.
# With --batch, SIGTERM goes to the shell alone, which does not pass it on.
scancel --signal=TERM "$s1"
scancel --batch --signal=TERM "$s1"
signals=$((signals + 2))
step=$(last_step slow)
sl_further() { [ "$(last_step slow)" -ge $((step + 3)) ]; }
check "scancel --signal=TERM, and with --batch: the job goes on" wait_for 60 sl_further
check "and is not requeued" [ "$(nevents slow requeued)" -eq 0 ]
check "and the task still runs" running "$s1"
scancel --full --signal=TERM "$s1"
signals=$((signals + 1))
check "scancel --full --signal=TERM: the task ends" wait_for 60 ended "$s1"
check "the job is requeued at its next step (the log says so)" [ "$(nevents slow requeued)" -eq 1 ]
check "the job is back in incoming/ with no claim" one_state slow incoming
check "sdbatch exited 75, the script 0" eval 'out "$s1" | grep -q "exited with 75"'
check "the task is COMPLETED, not failed" \
    [ "$(field "$s1" JobState) $(field "$s1" ExitCode)" = "COMPLETED 0:0" ]

s2=$(submit "$SPOOL")
tasks=$((tasks + 1))
check "the next task runs the job again" wait_for 90 running_step slow 2
scancel --batch --signal=USR1 "$s2"
signals=$((signals + 1))
check "scancel --batch --signal=USR1: the task ends" wait_for 60 ended "$s2"
check "the job is requeued again" [ "$(nevents slow requeued)" -eq 2 ]
check "and back in incoming/" one_state slow incoming
check "the task is COMPLETED" [ "$(field "$s2" JobState)" = COMPLETED ]

s3=$(submit "$SPOOL")
tasks=$((tasks + 1))
check "a third task finishes the job" wait_for 400 ended "$s3"
check "the job is done" one_state slow done
check "its log: claimed 3 times, requeued twice, done once" \
    [ "$(nevents slow claimed) $(nevents slow requeued) $(nevents slow done)" = "3 2 1" ]
check "its PNG matches its record" images_ok "$SPOOL/done/slow.json"
check "the third task says the job is done" eval 'out "$s3" | grep -q "job slow done"'

# ---- the array ------------------------------------------------------------------
section "the array"
SPOOL=$T/spool-array
check "the array ends" wait_for 150 array_ended
for t in 0 1 2; do
	check "task $t is COMPLETED, exit code 0:0" \
	    [ "$(field "${arr}_$t" JobState) $(field "${arr}_$t" ExitCode)" = "COMPLETED 0:0" ]
	check "task $t's output names its array index" \
	    eval 'out "${arr}_$t" | grep -q "(task $t) exited with 0"'
	n=$(out "${arr}_$t" | grep -c "job a[0-9]* done")
	diag "task $t ran $n jobs"
	check "task $t ran at least one job" [ "$n" -ge 1 ]
done
all_once() {
	for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
		one_state "a$i" done && [ "$(nevents "a$i" done)" -eq 1 ] &&
		    [ "$(nevents "a$i" claimed)" -eq 1 ] || return 1
	done
}
check "all 12 jobs are done, each claimed and done exactly once" all_once
n=$(for t in 0 1 2; do out "${arr}_$t"; done | grep -c "job a[0-9]* done")
check "the tasks' outputs report 12 jobs done in all (got $n)" [ "$n" -eq 12 ]
check "nothing is queued, running or failed" \
    [ -z "$(ls -A "$SPOOL/incoming")$(ls -A "$SPOOL/running")$(ls -A "$SPOOL/failed")" ]

# ---- the failed job ---------------------------------------------------------------
section "the failed job"
SPOOL=$T/spool-failed
check "a task with a bad job ends" wait_for 90 ended "$f1"
check "the bad job is in failed/" one_state bad failed
check "the good job after it is done" one_state good done
check "sdbatch exited 65 (bad job data)" eval 'out "$f1" | grep -q "exited with 65"'
check "scontrol: the task FAILED, exit code 65:0" \
    [ "$(field "$f1" JobState) $(field "$f1" ExitCode)" = "FAILED 65:0" ]
sacct_says() { sacct -c -n -X -j "$f1" -o state,exitcode 2>/dev/null | grep -q "FAILED *65:0"; }
check "sacct (job completion log): FAILED 65:0" wait_for 20 sacct_says

# ---- the time limits --------------------------------------------------------------
section "the time limits"
SPOOL=$T/spool-warned
check "with the script's warning (SIGUSR1 to the shell): the task ends" wait_for 90 ended "$tw"
check "the job is requeued (the log says so)" [ "$(nevents long requeued)" -eq 1 ]
signals=$((signals + 1))
check "and back in incoming/" one_state long incoming
check "the task is COMPLETED, before its time limit" \
    [ "$(field "$tw" JobState) $(field "$tw" ExitCode)" = "COMPLETED 0:0" ]

SPOOL=$T/spool-limit
check "without the warning, the time limit ends the task (60 to 90 s)" wait_for 150 ended "$tl"
signals=$((signals + 1))
check "Slurm says TIMEOUT" [ "$(field "$tl" JobState)" = TIMEOUT ]
check "the job was requeued at its next step, before the SIGKILL (the log says so)" \
    [ "$(nevents long requeued)" -eq 1 ]
check "sdbatch exited 75 and the script saw it (no SIGKILL)" eval 'out "$tl" | grep -q "exited with 75"'
check "the job is back in incoming/ with no claim" one_state long incoming
check "it stopped long before its 12000 steps" [ "$(grep -c '"event":"step"' "$SPOOL/logs/long.jsonl")" -lt 12000 ]

# ---- preemption ---------------------------------------------------------------------
# A job of a higher partition needs the node that a task holds: Slurm
# requeues the task (PreemptMode=REQUEUE: SIGTERM to every process, like
# scancel), sdbatch requeues its job, and the task, run again, finishes it.
section "preemption"
SPOOL=$T/spool-preempt
job slow 'prompt: "a slow job"
width: 128
height: 128
steps: 1000'
p1=$(submit "$SPOOL" --exclusive)
tasks=$((tasks + 1))
check "an exclusive task runs the slow job" wait_for 90 running_step slow 2
u1=$(sbatch --parsable --chdir="$OUT" --partition=urgent --mem=16M --wrap true 2>> "$T/sbatch.err" | cut -d';' -f1)
signals=$((signals + 1))
task_requeued() { [ "$(field "$p1" JobState) $(field "$p1" Restarts)" = "PENDING 1" ]; }
check "a job of the urgent partition preempts it: the task is requeued by Slurm" wait_for 60 task_requeued
check "the urgent job runs" wait_for 60 eval '[ "$(field "$u1" JobState)" = COMPLETED ]'
check "sdbatch requeued its job (the log says so)" [ "$(nevents slow requeued)" -eq 1 ]
check "and the job is back in incoming/" one_state slow incoming
# A requeued task waits 2 minutes (BeginTime): start it now.
scontrol update JobId="$p1" StartTime=now 2>> "$T/sbatch.err"
check "the task, run again, ends" wait_for 400 eval 'ended "$p1"'
check "it is COMPLETED" [ "$(field "$p1" JobState) $(field "$p1" ExitCode)" = "COMPLETED 0:0" ]
check "the job is done" one_state slow done
check "its log: claimed twice, requeued once, done once" \
    [ "$(nevents slow claimed) $(nevents slow requeued) $(nevents slow done)" = "2 1 1" ]

# No job lost or run twice, in any spool: each job file is in one folder,
# no claim is left, no job is done twice.
none_lost() {
	for SPOOL in "$T"/spool-*; do
		for _f in "$SPOOL"/logs/*.jsonl; do
			_id=$(basename "$_f" .jsonl)
			_n=$(ls "$SPOOL"/incoming/"$_id".yaml "$SPOOL"/running/"$_id".yaml \
			    "$SPOOL"/done/"$_id".yaml "$SPOOL"/failed/"$_id".yaml 2>/dev/null | wc -l)
			[ "$_n" -eq 1 ] && [ "$(nevents "$_id" done)" -le 1 ] || return 1
		done
		[ -z "$(ls "$SPOOL"/running/)" ] || return 1
	done
}
section "the end"
check "no job is lost or run twice, nothing is left in running/" none_lost
all() { cat "$T"/spool-*/logs/*.jsonl | grep -c "\"event\":\"$1\""; }
diag "$tasks Slurm tasks, $(ls "$T"/spool-*/logs/*.jsonl | wc -l) jobs, $signals signals" \
    "(4 scancel, a warning, a time limit, a preemption), $(all claimed) claims, $(all requeued) requeues," \
    "$(all done) done, $(all failed) failed"
finish
