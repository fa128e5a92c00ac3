#!/usr/bin/env bash
# Multi-GPU (or multi-process CPU) evaluation with torchrun on one node: each process scores its share
# of the images and mmengine gathers the detections (its sampler's padding removed), so the metrics
# are those of one process.
# Usage: bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py args...]
# Several nodes: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node (tools/launch/torchrun.sh).
set -euo pipefail
(($# >= 3)) || { grep -m1 '^# Usage:' "$0" | cut -c3- >&2; exit 2; }
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch/torchrun.sh" "$3" test.py "$1" "$2" "${@:4}"
