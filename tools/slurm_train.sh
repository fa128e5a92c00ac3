#!/usr/bin/env bash
# Training on a Slurm cluster (GPUS_PER_NODE, PORT and the rest: tools/launch/srun.sh).
# Usage: GPUS=16 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
# Paper setting (total batch 32 = 16 GPUs x 2 images): GPUS=16 GPUS_PER_NODE=8.
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
shift 4
GPUS=${GPUS:-16} exec bash "$(dirname "${BASH_SOURCE[0]}")/launch/srun.sh" "$PARTITION" "$JOB_NAME" \
  train.py "$CONFIG" --work-dir="$WORK_DIR" "$@"
