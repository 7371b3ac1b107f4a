#!/usr/bin/env bash
# GPU ingest benchmark for a CUDA machine WITHOUT network access (H100/H200), in under 10 minutes.
#
#   bash bench/gpu.sh                 # all paths, batches 256,512,1024, 16,384 images per run
#   bash bench/gpu.sh --batches 512   # any bench/gpu.py option passes through
#
# Needs: python3 with torch (CUDA) and torchvision (nvJPEG) preinstalled, as on the lent GPU
# machines; everything else comes from the wheels in bench/wheels/ (made here, see
# bench/README.md), installed with --no-index into a private folder put on PYTHONPATH. The repo
# is not pip-installed: bench/gpu.py puts the repo root on sys.path.
# Output: one JSON line on stdout, also written to $BENCH_OUT (default /tmp/gpu_ingest.json).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${BENCH_SITE:-/tmp/imagesearch-bench-site}
WHEELS=bench/wheels

"$PY" - <<'PYEOF'
import sys, torch, torchvision
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"cuda available: {torch.cuda.is_available()}", file=sys.stderr)
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name(0)}", file=sys.stderr)
PYEOF

if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  # By name, so pip picks the wheel matching this Python (pydantic_core is built per version).
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --find-links "$WHEELS" --target "$SITE" \
      open_clip_torch ftfy wcwidth pydantic pydantic_core pydantic_settings python_dotenv \
      typing_inspection annotated_types 2>&1 | grep -v -i "warning" >&2 || true
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "no wheels in $WHEELS: relying on what $PY already has" >&2
fi
"$PY" -c "import open_clip" || { echo "open_clip is missing: fill bench/wheels (bench/README.md)" >&2; exit 1; }

export PYTHONUNBUFFERED=1
exec "$PY" bench/gpu.py --out "${BENCH_OUT:-/tmp/gpu_ingest.json}" "$@"
