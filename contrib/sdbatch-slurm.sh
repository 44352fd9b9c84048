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
# When Slurm stops a task (time limit, preemption), --signal below gives
# sdbatch SIGTERM 120 s before the kill: the running job stops at its next
# step and goes back to incoming/ (exit status 75), for another task or the
# next array.
#SBATCH --job-name=sdbatch
#SBATCH --cpus-per-task=16
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --signal=B:TERM@120
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

# Run sdbatch in the background and wait, so that this shell can pass
# Slurm's SIGTERM on at once.
"$SDBATCH" watch --once --device "$DEVICE" --threads "$OMP_NUM_THREADS" "$SPOOL" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null' TERM INT
wait $pid
status=$?
# wait returns early when the trap runs: wait again for the real status.
if kill -0 $pid 2>/dev/null; then
	wait $pid
	status=$?
fi
echo "sdbatch on $(hostname) (task ${SLURM_ARRAY_TASK_ID:-0}) exited with $status"
# 75: interrupted, the job was requeued; not a failure of the array task.
[ $status -eq 75 ] && exit 0
exit $status
