"""Where things are: the repository root the tests (and the processes they start) run from."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
