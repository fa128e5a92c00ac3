#!/usr/bin/env bash
# Training on a Slurm cluster (GPUS_PER_NODE, PORT and the rest: tools/launch/srun.sh).
# Usage: GPUS=16 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
# Paper setting (total batch 32 = 16 GPUs x 2 images): GPUS=16 GPUS_PER_NODE=8.
set -euo pipefail
(($# >= 4)) || { grep -m1 '^# Usage:' "$0" | cut -c3- >&2; exit 2; }
GPUS=${GPUS:-16} exec bash "$(dirname "${BASH_SOURCE[0]}")/launch/srun.sh" "$1" "$2" train.py "$3" --work-dir="$4" "${@:5}"
