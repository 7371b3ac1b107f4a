"""The integration tier: every test below this folder is marked `integration` (`pytest -m integration`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from imagesearch.stores.base import Store
from tests.support.stores import BACKENDS, open_test_store

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each backend in turn (OpenSearch skips without ``OPENSEARCH_URL``): one contract, every store."""
    yield from open_test_store(request.param, tmp_path)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the module's ``app`` fixture (each module says what its app holds)."""
    return app.test_client()
