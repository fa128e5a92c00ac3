#!/usr/bin/env bash
# Create (or verify) the project's virtual environment ($PIT_DET_VENV, default .venv/).
#
# Idempotent: a stamp file records a hash of the set-up files and the mmcv variant installed
# (tools/setup/mmcv_variant.py: CPU ops, or CUDA ops for the visible GPUs); when both match, nothing is
# reinstalled and only the install check (tools/setup/verify_install.py) runs. So installing nvcc
# (or another GPU) and running the set-up again builds and installs the mmcv this machine now needs.
#
# What it installs, and why (measured on a 2-core CPU-only machine):
#   * Every pip call runs under tools/setup/constraints.txt, so no step moves a package an earlier step
#     needed (installing torch alone would lift setuptools to 84, which has no pkg_resources).
#   * torch 2.13.0 from the registry (the CUDA build; it runs on CPU).
#   * mmcv 2.1.0 built from source WITH its compiled ops (mmdet 3.3.0 requires mmcv < 2.2.0 and
#     imports mmcv.ops), without debug info, with torch's headers precompiled once
#     (tools/setup/pch_cxx.py) and with every core: 3.6 min on 2 cores of an AMD EPYC Zen 3
#     (docs/install.md has the set-up's time by processor). With a
#     visible CUDA GPU and nvcc, the CUDA ops are built for those GPUs' architectures; with a GPU
#     but no nvcc, the CPU ops only, and deformable attention runs in pit-det's Triton kernel
#     (tools/setup/mmcv_variant.py).
#     The wheel is cached in $PIT_DET_CACHE (default ~/.cache/pit-det) keyed by Python, torch and
#     variant; pip's own cache is bypassed for it, so an empty $PIT_DET_CACHE means a real build.
#   * mmengine 0.10.7, mmdet 3.3.0, timm, pycocotools, pytest: see pyproject.toml.
#
# PIT_DET_NVCC=none builds mmcv's CPU ops only even where nvcc exists (GPUs then use the Triton
# kernel); PIT_DET_NVCC=PATH names the nvcc to use.
# PIT_DET_SETUP_DRY_RUN=1 prints the mmcv variant and build command this machine would use (the
# venv must already have torch) and exits without building.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${PIT_DET_VENV:-$ROOT/.venv}"
CACHE="${PIT_DET_CACHE:-$HOME/.cache/pit-det}"
PYTHON="${PYTHON:-python3}"
CONSTRAINTS="$ROOT/tools/setup/constraints.txt"
DRY_RUN="${PIT_DET_SETUP_DRY_RUN:-0}"

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

files_hash() {
  cat "$ROOT/tools/setup/setup_env.sh" "$ROOT/tools/setup/constraints.txt" "$ROOT/tools/setup/mmcv_variant.py" \
    "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1
}
# The stamp: "<files_hash> <MMCV_TAG>" of the last complete set-up.
STAMP="$VENV/.pit-det-stamp"
if [[ -f "$STAMP" && -x "$VENV/bin/python" ]]; then
  read -r STAMP_FILES STAMP_TAG < "$STAMP" || true
  NOW_TAG="$("$VENV/bin/python" "$ROOT/tools/setup/mmcv_variant.py" 2>/dev/null | sed -n 's/^MMCV_TAG=//p' || true)"
  if [[ "$STAMP_FILES" == "$(files_hash)" && -n "$NOW_TAG" && "$STAMP_TAG" == "$NOW_TAG" ]]; then
    [[ "$DRY_RUN" == 1 ]] && log "dry run: environment $VENV is up to date (mmcv $NOW_TAG)"
    if [[ "$DRY_RUN" != 1 ]]; then
      log "environment $VENV is up to date"
      exec "$VENV/bin/python" "$ROOT/tools/setup/verify_install.py"
    fi
  elif [[ "$STAMP_FILES" == "$(files_hash)" && -n "$NOW_TAG" ]]; then
    log "this machine now needs mmcv $NOW_TAG (installed: ${STAMP_TAG:-unknown}): building or reusing it and installing it"
  fi
fi

T0=$SECONDS
if [[ ! -x "$VENV/bin/python" ]]; then
  [[ "$DRY_RUN" == 1 ]] && { log "dry run: no venv at $VENV"; exit 1; }
  log "creating virtual environment $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
# This machine's pip config lists local indexes that lack most projects; pip warns once per
# project. Those warnings are noise, everything else is shown.
pip_install() {
  "${PIP[@]}" install -q -c "$CONSTRAINTS" "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

if [[ "$DRY_RUN" != 1 ]]; then
  log "installing build tools under tools/setup/constraints.txt (setuptools<81: mmcv's setup.py imports pkg_resources)"
  pip_install setuptools wheel ninja packaging
  log "installing torch and torchvision (first time: ~2.6 GB download)"
  pip_install torch torchvision
fi

VARIANT="$("$PY" "$ROOT/tools/setup/mmcv_variant.py")" || exit 1
eval "$VARIANT"  # sets MMCV_TAG, the MMCV_BUILD_ENV array and MMCV_NOTE
if [[ -n "$MMCV_NOTE" ]]; then log "$MMCV_NOTE"; fi
WHEEL_DIR="$CACHE/wheels/$MMCV_TAG"
MMCV_VERSION="$(sed -n 's/^mmcv==\([0-9.]*\).*/\1/p' "$CONSTRAINTS")"
# MMCV_WITH_OPS=1 compiles the ops; --no-build-isolation builds against the torch installed above
# (an isolated build would fetch another torch and setuptools); --no-cache-dir keeps pip from
# reusing a wheel it built earlier, which would skip the very steps this build must prove.
BUILD=(env "${MMCV_BUILD_ENV[@]}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" wheel -v -c "$CONSTRAINTS"
       --no-build-isolation --no-deps --no-binary mmcv --no-cache-dir "mmcv==$MMCV_VERSION")
if [[ "$DRY_RUN" == 1 ]]; then
  log "dry run: mmcv variant $MMCV_TAG, wheel cache $WHEEL_DIR"
  printf 'build command:'; printf ' %q' "${BUILD[@]}" -w "$WHEEL_DIR"; printf '\n'
  exit 0
fi

mkdir -p "$WHEEL_DIR"
MMCV_WHEEL="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$MMCV_WHEEL" ]]; then
  BUILD_LOG="$WHEEL_DIR/mmcv-build.log"
  log "building mmcv $MMCV_VERSION's C++ ops once ($MMCV_TAG; 3.6 to 5.1 min on 2 cores of the processors in docs/install.md), cached in $WHEEL_DIR: ${MMCV_BUILD_ENV[*]}; log: $BUILD_LOG"
  TMP_WHEELS="$(mktemp -d)"
  PCH_DIR="$(mktemp -d)"  # tools/setup/pch_cxx.py's precompiled torch headers (about 0.4 GB), for this build only
  # Progress: ninja prints "[k/N]" for each compiled file; we echo those lines.
  set +e
  PIT_DET_PCH_DIR="$PCH_DIR" "${BUILD[@]}" -w "$TMP_WHEELS" 2>&1 | tee "$BUILD_LOG" \
    | grep --line-buffered -E '^\s*\[[0-9]+/[0-9]+\]' \
    | sed -u -E 's/^\s*(\[[0-9]+\/[0-9]+\]).* -c [^ ]*\/([^ /]+) .*/  \1 compiled \2/'
  rc=${PIPESTATUS[0]}
  set -e
  rm -rf "$PCH_DIR"
  if [[ $rc -ne 0 ]]; then
    # pip's own tail is its subprocess shim; the reason is in the build's error lines.
    log "mmcv build FAILED (exit $rc). The lines that say why (full log: $BUILD_LOG):"
    grep -E -A3 'Traceback|Error|error:|FAILED' "$BUILD_LOG" | grep -v '^--$' | tail -n 40 >&2
    # The first Python exception of the log is the cause (e.g. "ModuleNotFoundError: No module
    # named 'pkg_resources'"); what pip prints after it is its own reaction.
    REASON="$(grep -m1 -E '^\s*[A-Za-z_.]*(Error|Exception): ' "$BUILD_LOG" | sed -E 's/^\s+//' || true)"
    [[ -n "$REASON" ]] && log "mmcv build FAILED because: $REASON"
    exit 1
  fi
  mv "$TMP_WHEELS"/mmcv-*.whl "$WHEEL_DIR"/
  rmdir "$TMP_WHEELS" 2>/dev/null || true
  MMCV_WHEEL="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl | head -n1)"
  log "built $MMCV_WHEEL"
else
  log "reusing cached $MMCV_WHEEL"
fi

log "installing mmcv (built wheel), mmengine, mmdet, timm and the pit_det package"
# --force-reinstall: pip keeps an installed mmcv of the same version, whichever variant it is.
pip_install --force-reinstall --no-deps "$MMCV_WHEEL"
pip_install -e "$ROOT[dev]"

"$PY" "$ROOT/tools/setup/verify_install.py"
echo "$(files_hash) $MMCV_TAG" > "$STAMP"
log "environment ready in $((SECONDS - T0)) s"
