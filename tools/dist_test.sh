#!/usr/bin/env bash
# Multi-GPU (or multi-process CPU) evaluation with torchrun on one node: each process scores its share
# of the images and mmengine gathers the detections (its sampler's padding removed), so the metrics
# are those of one process.
# Usage: bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py args...]
# Several nodes: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node (tools/launch/torchrun.sh).
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
NPROCS=$3
shift 3
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch/torchrun.sh" "$NPROCS" test.py "$CONFIG" "$CHECKPOINT" "$@"
