"""The end-to-end tier: every test below this folder is marked `e2e` (`pytest -m e2e`, or `-m "not e2e"`
for the fast suite)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.broker import private_broker
from tests.support.hostile_batch import HostileBatch, stage_batch

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


# Fault tests own their broker and their processes (tests/support/broker.py says why).


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    if outcome.get_result().failed:
        item.stash[_FAILED] = True


def _failed(request: pytest.FixtureRequest) -> bool:
    return request.node.stash.get(_FAILED, False)


@pytest.fixture
def broker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A private Redis (no persistence) and namespace for one test; its processes are closed after it."""
    yield from private_broker(monkeypatch, tmp_path, durable=False, failed=lambda: _failed(request))


@pytest.fixture
def durable_broker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A private Redis with an AOF (fsync always), for a test that kills and restarts it."""
    yield from private_broker(monkeypatch, tmp_path, durable=True, failed=lambda: _failed(request))


@pytest.fixture
def hostile_batch(redis_client, data_dir: Path) -> Callable[..., HostileBatch]:
    """``hostile_batch(prefix, good_size=(96, 64))``: good JPEGs and the hostile corpus in ``data_dir``'s
    store and blob storage, each with an embed message on this run's Redis, for a worker to settle."""
    return lambda prefix, **options: stage_batch(data_dir, prefix, **options)
