#!/usr/bin/env bash
# torchrun on this node, for tools/dist_train.sh and tools/dist_test.sh:
#   bash tools/launch/torchrun.sh NUM_PROCS TOOL [TOOL args...]     (TOOL: train.py or test.py)
# Environment (docs/training.md): NNODES, NODE_RANK, MASTER_ADDR (several nodes), PORT, PYTHON.
set -euo pipefail
NPROCS=$1
TOOL=$2
shift 2
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "${PYTHON:-python}" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --nproc_per_node="$NPROCS" --master_port="${PORT:-29500}" \
  "$TOOLS/$TOOL" --launcher pytorch "$@"
