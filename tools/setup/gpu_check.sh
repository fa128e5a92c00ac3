#!/usr/bin/env bash
# The GPU check, for offline GPU machines and clusters: on a machine with an NVIDIA GPU, a preinstalled
# torch with CUDA and Triton, and no network, it installs what is missing from a local folder of
# wheels, builds mmcv's CPU ops (every core, no debug info; deformable attention on the GPU is
# pit-det's Triton kernel, so no nvcc build), then runs tools/setup/gpu_check.py: the GPU test tier
# (tests/gpu) and the latency benchmark, each judged; exit 1 when either fails. Target: under 8 minutes on one NVIDIA H200, set-up
# included (docs/benchmark.md has its last run there).
#
#   bash tools/setup/gpu_check.sh --prepare [DIR]   # where pip reaches the registry: fetch the wheels (default .whl)
#   bash tools/setup/gpu_check.sh [OUT]             # on the GPU machine: results as JSON in OUT (default $OUT)
#
# PIT_DET_WHEELS (default .whl) holds the mmcv sdist and wheels of mmengine, mmdet, pycocotools,
# pytest (the test tier) and their small dependencies for the GPU machine's Python
# (PIT_DET_GPU_PYTHON, default 3.12).
# PIT_DET_GPU_CHECK_DRY_RUN=1 runs everything it can on CPU instead: the installs and the build
# are printed, not run, and the checks run at toy sizes with Triton's interpreter (the suite's test).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WHEELS="${PIT_DET_WHEELS:-$ROOT/.whl}"
PY="${PYTHON:-python3}"
DRY="${PIT_DET_GPU_CHECK_DRY_RUN:-0}"
# What the GPU machine lacks: OpenMMLab, pycocotools, and what they need beyond its image.
PACKAGES=(mmengine==0.10.7 mmdet==3.3.0 pycocotools==2.0.11 addict==2.4.0 yapf==0.43.0 termcolor==3.3.0
          terminaltables==3.1.10 shapely==2.2.0 platformdirs==4.14.9 setuptools==80.10.2
          pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0 packaging==26.4)
# setuptools < 81: mmcv's setup.py and mmengine import pkg_resources.
log() { printf '[gpu check %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [[ "${1:-}" == --prepare ]]; then
  DIR="${2:-$WHEELS}"
  GPU_PY="${PIT_DET_GPU_PYTHON:-3.12}"
  mkdir -p "$DIR"
  PLATFORMS=()
  for n in 17 24 27 28 31 34; do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$GPU_PY" --implementation cp \
    "${PLATFORMS[@]}" --platform manylinux2014_x86_64 -d "$DIR" "${PACKAGES[@]}"
  # The sdist's metadata comes from mmcv's setup.py, which imports torch and pkg_resources: run by a
  # Python that has them (pit-det's .venv after the set-up), else this one.
  SDIST_PY="$PY"
  if [[ -z "${PYTHON:-}" && -x "$ROOT/.venv/bin/python" ]]; then SDIST_PY="$ROOT/.venv/bin/python"; fi
  "$SDIST_PY" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$DIR" mmcv==2.1.0 \
    || { log "could not download mmcv 2.1.0's sdist with $SDIST_PY: set PYTHON to a Python with torch and setuptools<81 (pit-det's .venv)"; exit 1; }
  log "wheels for Python $GPU_PY in $DIR: $(ls "$DIR" | wc -l) files, $(du -sh "$DIR" | cut -f1)"
  exit 0
fi

OUT="${1:-${OUT:-$ROOT/work_dirs/gpu_check}}"
mkdir -p "$OUT"
T0=$SECONDS
SITE="${PIT_DET_GPU_SITE:-/tmp/pit-det-site}"
# --upgrade: pip leaves a package that a --target folder already holds in place (a warning, exit 0).
INSTALL=("$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE")
# mmcv's CPU ops only, as the set-up builds them on a GPU machine without nvcc (tools/setup/mmcv_variant.py:
# the GPUs hidden from mmcv's setup.py, Python's flags without -g). The dry run plans for a Hopper GPU.
ARCHS=()
if [[ "$DRY" == 1 ]]; then ARCHS=(--cuda-archs 9.0); fi
VARIANT="$(PIT_DET_NVCC=none "$PY" "$ROOT/tools/setup/mmcv_variant.py" "${ARCHS[@]}")" || exit 1
eval "$VARIANT"  # MMCV_BUILD_ENV
BUILD=(env "${MMCV_BUILD_ENV[@]}" MAX_JOBS="$(nproc)"
       "$PY" -m pip wheel -q --no-index --no-deps --no-build-isolation -w "$SITE.wheels")
if [[ "$DRY" == 1 ]]; then
  log "dry run: would install: ${INSTALL[*]} --find-links $WHEELS ${PACKAGES[*]}"
  log "dry run: would build mmcv: ${BUILD[*]} $WHEELS/mmcv-2.1.0.tar.gz"
  exec "$PY" "$ROOT/tools/setup/gpu_check.py" --dry-run --out "$OUT"
fi

# By name: a wheel missing from the folder is named now, not as an ImportError after the build.
log "installing ${#PACKAGES[@]} packages from $WHEELS into $SITE"
"${INSTALL[@]}" --find-links "$WHEELS" "${PACKAGES[@]}" \
  || { log "a wheel is missing from $WHEELS (above); fetch them with: bash tools/setup/gpu_check.sh --prepare"; exit 1; }
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# A wheel built by an earlier run on this kind of machine, put beside the others, saves the build;
# each build's wheel is left in OUT for that. Its name does not say which torch it was built
# against: it is used only if it installs (this Python's tag) and its ops load here.
BUILT=("$WHEELS"/mmcv-2.1.0-*.whl)
MMCV_OK=0
if [[ -f "${BUILT[0]}" ]]; then
  if "${INSTALL[@]}" "${BUILT[0]}" && "$PY" -c 'import mmcv.ops' > /dev/null 2>&1; then
    MMCV_OK=1
    log "installed the mmcv build ${BUILT[0]##*/}"
  else
    log "the mmcv build ${BUILT[0]##*/} does not install or load with this Python and torch: building mmcv"
    rm -rf "$SITE"/mmcv "$SITE"/mmcv-*.dist-info
  fi
fi
if [[ "$MMCV_OK" == 0 ]]; then
  log "building mmcv 2.1.0's CPU ops with $(nproc) jobs (82 s on an H200 machine's 16 cores)"
  rm -rf "$SITE.wheels"  # this build's wheel only
  PIT_DET_PCH_DIR="$SITE.pch" "${BUILD[@]}" "$WHEELS"/mmcv-2.1.0.tar.gz > "$OUT/mmcv-build.log" 2>&1 \
    || { rm -rf "$SITE.pch"; tail -n 30 "$OUT/mmcv-build.log"; log "mmcv build FAILED (log: $OUT/mmcv-build.log)"; exit 1; }
  rm -rf "$SITE.pch"
  "${INSTALL[@]}" "$SITE.wheels"/mmcv-*.whl
  cp "$SITE.wheels"/mmcv-*.whl "$OUT/"
fi
log "set-up done in $((SECONDS - T0)) s; running the checks"
rc=0
"$PY" "$ROOT/tools/setup/gpu_check.py" --out "$OUT" || rc=$?
log "done in $((SECONDS - T0)) s (exit $rc)"
exit $rc
