#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the project with its test extras.
# torch/torchvision are installed first with exact pins: any other version is a multi-GB download.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements/torch.txt
.venv/bin/python -m pip install -q -e ".[test]"
