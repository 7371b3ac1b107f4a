#!/usr/bin/env bash
# Quickstart 2: install, then run the whole test suite (needs Redis at 127.0.0.1:6379).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# The layers (import-linter contracts in pyproject.toml) and the linter, before the suite.
.venv/bin/lint-imports
.venv/bin/ruff check .
set +e
.venv/bin/python -m pytest -q "$@"
status=$?
set -e
# pytest exits 5 when it collected no tests: that is a failure of the suite, not a pass.
if [ "$status" -eq 5 ]; then
  echo "no tests were collected" >&2
  exit 1
fi
exit "$status"
