#!/usr/bin/env bash
# Evaluation on a Slurm cluster: the metrics are those of one process (tools/dist_test.sh);
# GPUS_PER_NODE, PORT and the rest: tools/launch/srun.sh.
# Usage: GPUS=8 bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
shift 4
GPUS=${GPUS:-8} exec bash "$(dirname "${BASH_SOURCE[0]}")/launch/srun.sh" "$PARTITION" "$JOB_NAME" \
  test.py "$CONFIG" "$CHECKPOINT" "$@"
