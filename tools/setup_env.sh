#!/usr/bin/env bash
# Create (or verify) the project's virtual environment in .venv/.
#
# Idempotent: a stamp file records a hash of this script and pyproject.toml; when
# it matches, nothing is reinstalled and only the self-check runs.
#
# What it installs, and why each pin (measured on a CPU-only machine):
#   * torch 2.13.0 from the registry (the CUDA build; it runs on CPU). A CPU-only
#     `+cpu` torch breaks the registry's torchvision ("torchvision::nms does not
#     exist"), and timm imports torchvision, so the `+cpu` wheel is excluded.
#   * mmcv 2.1.0 built from source WITH its compiled ops (mmdet 3.3.0 requires
#     mmcv < 2.2.0, and Deformable DETR needs MultiScaleDeformableAttention).
#     The build takes ~15 min on 2 cores, so the wheel is cached outside the repo
#     in $PIT_DET_CACHE (default ~/.cache/pit-det), keyed by Python and torch.
#   * mmengine 0.10.7, mmdet 3.3.0, timm, pycocotools, pytest: see pyproject.toml.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PIT_DET_VENV:-$ROOT/.venv}"
CACHE="${PIT_DET_CACHE:-$HOME/.cache/pit-det}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="torch==2.13.0,!=2.13.0+cpu"
TORCHVISION_SPEC="torchvision==0.28.0"
MMCV_VERSION="2.1.0"

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

stamp_value() {
  cat "$ROOT/tools/setup_env.sh" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1
}

STAMP="$VENV/.pit-det-stamp"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_value)" ]]; then
  log "environment $VENV is up to date"
  exec "$VENV/bin/python" "$ROOT/tools/self_check.py"
fi

T0=$SECONDS
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
# This machine's pip config lists local indexes that lack most projects; pip
# warns once per project. Those warnings are noise, everything else is shown.
pip_install() { "${PIP[@]}" install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

log "installing build tools (setuptools<81: mmcv's setup.py imports pkg_resources)"
pip_install "setuptools>=64,<81" wheel ninja packaging

log "installing $TORCH_SPEC and $TORCHVISION_SPEC (first time: ~2.6 GB download)"
pip_install "$TORCH_SPEC" "$TORCHVISION_SPEC"

TAG="$("$PY" -c 'import sys, torch; print("py%d%d-torch%s" % (sys.version_info[0], sys.version_info[1], torch.__version__.replace("+", "_")))')"
WHEEL_DIR="$CACHE/wheels/$TAG"
mkdir -p "$WHEEL_DIR"
MMCV_WHEEL="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$MMCV_WHEEL" ]]; then
  BUILD_LOG="$WHEEL_DIR/mmcv-build.log"
  log "building mmcv $MMCV_VERSION with ops for $TAG (~15 min on 2 cores); log: $BUILD_LOG"
  TMP_WHEELS="$(mktemp -d)"
  # MMCV_WITH_OPS=1 compiles the C++ ops; --no-build-isolation builds against
  # the torch installed above (an isolated build would fetch another torch).
  # Progress: ninja prints "[k/N]" for each compiled file; we echo those lines.
  set +e
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "${PIP[@]}" wheel -v --no-build-isolation --no-deps --no-binary mmcv \
    -w "$TMP_WHEELS" "mmcv==$MMCV_VERSION" 2>&1 | tee "$BUILD_LOG" \
    | grep --line-buffered -E '^\s*\[[0-9]+/[0-9]+\]' | sed -u -E 's/^\s*(\[[0-9]+\/[0-9]+\]).* -c [^ ]*\/([^ /]+) .*/  \1 compiled \2/'
  rc=${PIPESTATUS[0]}
  set -e
  if [[ $rc -ne 0 ]]; then
    log "mmcv build FAILED (exit $rc); last lines of $BUILD_LOG:"
    tail -n 40 "$BUILD_LOG"
    exit 1
  fi
  mv "$TMP_WHEELS"/mmcv-*.whl "$WHEEL_DIR"/
  rmdir "$TMP_WHEELS" 2>/dev/null || true
  MMCV_WHEEL="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl | head -n1)"
  log "built $MMCV_WHEEL"
else
  log "reusing cached $MMCV_WHEEL"
fi

log "installing mmcv (cached wheel), mmengine, mmdet, timm and the pit_det package"
pip_install "$MMCV_WHEEL"
pip_install -e "$ROOT[dev]"

"$PY" "$ROOT/tools/self_check.py"
stamp_value > "$STAMP"
log "environment ready in $((SECONDS - T0)) s"
