#!/bin/sh
# sdbatch-slurm.sh: drain a shared spool with a Slurm job array.
#
# Every array task runs `sdbatch watch --once` against the same spool on a
# shared file system (NFS, Lustre, GPFS): the workers claim jobs by
# rename(2), so each job runs exactly once, and a job whose node dies is
# requeued by another task once its heartbeat is older than stale_after.
#
#   sbatch --array=0-15 contrib/sdbatch-slurm.sh /shared/sdbatch
#
# Stopping a task: sdbatch stops the running job at its next sampling step,
# puts it back into incoming/ for another task or the next array, and exits
# 75; this script then exits 0 (an interrupted task is not a failed one).
# Slurm stops a task in one of two ways, and sdbatch must get one SIGTERM
# (a second one makes it exit at once, without waiting for the step):
#  - SIGTERM to every process of the task at once: the time limit (SIGKILL
#    follows KillWait seconds later, 30 by default), preemption, `scancel ID`,
#    `scontrol requeue ID`, `scancel --full --signal=TERM ID`.  sdbatch gets
#    its own; this shell only waits for it (so `scancel --batch
#    --signal=TERM ID`, to this shell alone, does nothing).
#  - A signal to this shell alone: --signal=B:USR1@120 below, 120 s before
#    the time limit (Slurm may send it up to 60 s earlier), and
#    `scancel --batch --signal=USR1 ID`.  This shell passes it on to sdbatch
#    as SIGTERM.
# `scancel --signal=TERM ID` without --full or --batch signals job steps
# (srun) only, and this script starts none: it does nothing.
# A task that Slurm requeues (preemption with PreemptMode=REQUEUE, scontrol
# requeue) runs again later and drains what is queued then.  Where the
# partition has a GraceTime, the first SIGTERM of a preemption goes to job
# steps only: sdbatch renders on through the grace time and stops when it
# ends (SIGTERM to every process, as at a time limit).
#
# A job that fails makes `watch --once` exit with its status (65 bad job
# data, 66 a missing input, ...), and so the task: Slurm shows it FAILED
# with that exit code (sacct, scontrol show job).
#
# tests/slurm.sh (make check) runs this script under Slurm 22.05 (Debian's
# slurm-wlm): a 3-task array over one spool, scancel without --full or
# --batch, --full --signal=TERM and --batch --signal=USR1, a time limit with
# and without the early warning, a failed job, preemption with
# PreemptMode=REQUEUE (no GraceTime).
#SBATCH --job-name=sdbatch
#SBATCH --cpus-per-task=16
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --output=sdbatch-%A_%a.out
#   For GPU nodes (a build with --enable-cuda):
#   #SBATCH --gres=gpu:1   and   DEVICE=cuda below

set -u
SPOOL=${1:-${SDBATCH_SPOOL:-/shared/sdbatch}}
SDBATCH=${SDBATCH:-sdbatch}
DEVICE=${DEVICE:-cpu}

# One thread per allocated core.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
# Use a node-local Hub cache copy if the site has one.
# export HF_HUB_CACHE=/scratch/$USER/hf-cache

# The traps are set before sdbatch starts, so that no signal finds this
# shell without them (SIGUSR1 would end it, and Slurm would then kill
# sdbatch with SIGKILL).
pid=
early=
on_usr1() {
	if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null; else early=1; fi
}
trap on_usr1 USR1
trap : TERM INT

# Run sdbatch in the background and wait, so that this shell can take
# signals while it runs.
"$SDBATCH" watch --once --device "$DEVICE" --threads "$OMP_NUM_THREADS" "$SPOOL" &
pid=$!
[ -n "$early" ] && kill -TERM "$pid" 2>/dev/null
# wait returns early (status > 128) when a trap runs: wait again while
# sdbatch is there, for its real status.
wait "$pid"
status=$?
while [ "$status" -gt 128 ] && kill -0 "$pid" 2>/dev/null; do
	wait "$pid"
	status=$?
done
# 143: a SIGTERM came before sdbatch had set its handlers, that is before it
# claimed a job: nothing to requeue.
[ "$status" -eq 143 ] && status=75
echo "sdbatch on $(hostname) (task ${SLURM_ARRAY_TASK_ID:-0}) exited with $status"
# 75: interrupted, the job was requeued; not a failure of the array task.
[ "$status" -eq 75 ] && exit 0
exit "$status"
