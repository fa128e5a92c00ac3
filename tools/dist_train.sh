#!/usr/bin/env bash
# Multi-GPU (or multi-process CPU) training with torchrun on one node.
# Usage: bash tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]
# Several nodes: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node (tools/launch/torchrun.sh).
set -euo pipefail
CONFIG=$1
NPROCS=$2
shift 2
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch/torchrun.sh" "$NPROCS" train.py "$CONFIG" "$@"
