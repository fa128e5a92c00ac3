#!/usr/bin/env bash
# srun on a Slurm cluster, for tools/slurm_train.sh and tools/slurm_test.sh; mmengine reads the
# rank layout from Slurm's variables:
#   GPUS=N bash tools/launch/srun.sh PARTITION JOB_NAME TOOL [TOOL args...]   (TOOL: train.py or test.py)
# Environment (docs/training.md): GPUS; GPUS_PER_NODE (default GPUS up to 8: no GPU of a node
# reserved idle); PORT (default 29500: give each job sharing a node its own); CPUS_PER_TASK,
# SRUN_ARGS, PYTHON.
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
TOOL=$3
shift 3
GPUS=${GPUS:?set GPUS, the number of GPUs in all}
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC2086  # SRUN_ARGS holds several words
MASTER_PORT=${PORT:-29500} srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
  --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
  "${PYTHON:-python}" -u "$TOOLS/$TOOL" --launcher slurm "$@"
