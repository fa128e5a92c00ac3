#!/usr/bin/env bash
# Evaluation on a Slurm cluster: the metrics are those of one process (tools/dist_test.sh);
# GPUS_PER_NODE, PORT and the rest: tools/launch/srun.sh.
# Usage: GPUS=8 bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
set -euo pipefail
(($# >= 4)) || { grep -m1 '^# Usage:' "$0" | cut -c3- >&2; exit 2; }
GPUS=${GPUS:-8} exec bash "$(dirname "${BASH_SOURCE[0]}")/launch/srun.sh" "$1" "$2" test.py "$3" "$4" "${@:5}"
