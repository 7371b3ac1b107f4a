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
.venv/bin/python -m pip install -q -e ".[test,dev]"
# docker-compose (Debian's, v1) renders docker/compose.yaml offline for tests/unit/test_deployment_files.py;
# no Docker engine is needed for `docker-compose config`.
if ! command -v docker-compose >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose \
      >/dev/null; } || echo "install.sh: could not install docker-compose; the compose tests will be skipped" >&2
fi
# Chromium for the search page's browser test (tests/e2e/test_search_page.py drives it with
# playwright; `playwright install` cannot download browsers here). The test skips without it.
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "install.sh: could not install chromium; the browser test will be skipped" >&2
  else
    echo "install.sh: /usr/bin/chromium missing (apt-get install -y chromium as root); the browser test will be skipped" >&2
  fi
fi
