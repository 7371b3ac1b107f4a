"""The replica tier: published checkpoints rebuilt with small random weights in the session's
private hub cache (HF_HOME, set in tests/conftest.py), loaded by hub name through the production
loader and compared with the reference library. Every test here is marked `replica`."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.replica)
