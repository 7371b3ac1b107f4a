#!/usr/bin/env bash
# The GPU workers' benchmark (bench/gpu.py: the embed and caption workers' own stages, images/s and
# captions/s per GPU) on a CUDA machine WITHOUT network access (H100/H200), in under 10 minutes.
#
#   bash bench/gpu.sh                     # embed (tensor and Pillow paths, 2 processes) and caption
#   bash bench/gpu.sh --gpu-batches 512   # any bench/gpu.py option passes through
#   bash bench/gpu.sh --smoke             # the same code paths on a CPU, in seconds
#   bash bench/gpu.sh --fetch-wheels      # HERE, with network: fill bench/wheels for the GPU machine
#
# Needs: python3 with a CUDA build of torch and torchvision (nvJPEG), as on the lent GPU machines.
# Everything else comes from bench/wheels/ (requirements.txt: exactly what a --smoke run imported,
# pinned to this checkout's versions; see bench/README.md), installed with --no-index into a
# private folder put first on PYTHONPATH. The repo is not pip-installed: bench/gpu.py puts the repo
# root on sys.path. Output: JSON lines on stdout, also written to $BENCH_OUT (default
# /tmp/gpu_workers.jsonl); progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${BENCH_SITE:-/tmp/imagesearch-bench-site}
WHEELS=bench/wheels

if [ "${1:-}" = "--fetch-wheels" ]; then
  # Run where the project's venv and the package index are: the list is what the code imports.
  VENV_PY=${VENV_PY:-.venv/bin/python}
  mkdir -p "$WHEELS"
  OMP_WAIT_POLICY=PASSIVE "$VENV_PY" bench/gpu.py --smoke --list-wheels "$WHEELS/requirements.txt" >/dev/null
  # pydantic_core, regex, PyYAML... are built per Python version: one download per version the GPU
  # machines may have (pip install below picks the match by name).
  for version in ${BENCH_PYTHON_VERSIONS:-3.12}; do
    "$VENV_PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$WHEELS" -r "$WHEELS/requirements.txt"
  done
  du -sh "$WHEELS" >&2
  exit 0
fi

"$PY" - <<'PYEOF'
import sys, torch, torchvision
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"cuda available: {torch.cuda.is_available()}", file=sys.stderr)
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name(0)}", file=sys.stderr)
PYEOF

if [ -f "$WHEELS/requirements.txt" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --disable-pip-version-check \
      --find-links "$WHEELS" --target "$SITE" -r "$WHEELS/requirements.txt" >&2
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "no $WHEELS/requirements.txt: relying on what $PY already has (bash bench/gpu.sh --fetch-wheels)" >&2
fi
# No network on the GPU machines: never wait on the hub.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PYTHONPATH="$PWD:${PYTHONPATH:-}" "$PY" -c "import imagesearch.pipeline, imagesearch.models.open_clip_backend, \
imagesearch.models.captioner, imagesearch.stores.embedded" \
  || { echo "the worker stages do not import: fill $WHEELS (bench/README.md, GPU machine)" >&2; exit 1; }

# gpu.py skips runs that would start after --budget-s (480 s); the timeout is the backstop that keeps
# the whole script under 10 minutes (an interrupted run still prints the lines it had).
exec timeout --signal=INT "${BENCH_TIMEOUT_S:-570}" "$PY" bench/gpu.py --out "${BENCH_OUT:-/tmp/gpu_workers.jsonl}" "$@"
