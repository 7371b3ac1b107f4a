#!/usr/bin/env bash
# Quickstart 1: install, then start the API and workers, index sample images, print search results.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/imagesearch demo "$@"
