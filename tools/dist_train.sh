#!/usr/bin/env bash
# Multi-GPU (or multi-process CPU) training with torchrun on one node.
# Usage: bash tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]
# Several nodes: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node (tools/launch/torchrun.sh).
set -euo pipefail
(($# >= 2)) || { grep -m1 '^# Usage:' "$0" | cut -c3- >&2; exit 2; }
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch/torchrun.sh" "$2" train.py "$1" "${@:3}"
