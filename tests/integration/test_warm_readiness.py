"""Readiness follows warmth: this process's (``Services.warm``) and, under ``imagesearch serve``,
every sibling worker's, as the master's roster counts them (api/gunicorn_conf.py)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from api.gunicorn_conf import ROSTER_ENV, WarmRoster
from api.health import warmth_of
from imagesearch.config import StoreSettings
from imagesearch.dev.procs import wait_until


@pytest.fixture
def roster(tmp_path, monkeypatch):
    """A roster as a master with two workers leaves it, with this process as one of the workers."""
    roster = WarmRoster(tmp_path / "roster")
    roster.path.mkdir()
    roster.expect(2)
    monkeypatch.setenv(ROSTER_ENV, str(roster.path))
    return roster


@pytest.fixture
def sibling():
    """Another live process, standing for the second worker."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait(10)


def _ready(client) -> tuple[int, dict]:
    response = client.get("/readyz")
    return response.status_code, response.get_json()["checks"]


def test_without_a_server_hook_readyz_warms_the_process_it_asks(make_app):
    app = make_app()
    warmth = warmth_of(app)
    assert warmth.roster is None and not warmth.warm
    status, checks = _ready(app.test_client())
    assert status == 200 and checks == {"store": "ok", "broker": "ok", "models": "ok"}
    assert warmth.warm


def test_ready_only_when_every_worker_of_the_roster_is_warm(make_app, roster, sibling):
    app = make_app()
    client = app.test_client()
    warmth = warmth_of(app)
    # Under a master, the worker is warmed by the hook, never by a probe.
    status, checks = _ready(client)
    assert status == 503 and checks["models"].startswith("error: not warm") and not warmth.warm
    assert checks["workers"] == "error: 0 of 2 workers warm"

    assert warmth.warm_up()  # what post_worker_init does
    status, checks = _ready(client)
    assert status == 503 and checks["models"] == "ok" and checks["workers"] == "error: 1 of 2 workers warm"

    roster.mark_warm(sibling.pid, {"model_s": 0.1})
    status, checks = _ready(client)
    assert status == 200 and checks["workers"] == "ok"

    # A worker that died is not counted, even before the master removes its marker.
    sibling.kill()
    sibling.wait(10)
    status, checks = _ready(client)
    assert status == 503 and checks["workers"] == "error: 1 of 2 workers warm"
    roster.forget(sibling.pid)  # what child_exit does
    assert not (roster.path / f"{sibling.pid}.warm").exists()


def test_a_worker_whose_store_is_unreachable_stays_cold_and_warms_when_it_comes_back(make_app, data_dir, roster):
    # A write lock held past the store's busy timeout while it creates its schema: StoreUnavailable.
    path = data_dir / "store.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    try:
        app = make_app(data_dir=data_dir, storage=StoreSettings(busy_timeout_seconds=0.2))
        warmth = warmth_of(app)
        assert warmth.warm_up() is False
        assert warmth.error.startswith("the store cannot be reached") and not warmth.warm
        status, checks = _ready(app.test_client())
        assert status == 503 and checks["models"] == f"error: not warm: {warmth.error}"
        warmth.keep_trying()
        time.sleep(1.5)
        assert not warmth.warm  # still locked: still cold
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    wait_until(lambda: warmth.warm, 30, 0.1, "warm once the store answers")
    assert (roster.path / f"{os.getpid()}.warm").exists()


def test_a_model_that_cannot_load_raises_from_warming(make_app, tmp_path):
    from imagesearch.config import ModelSettings
    from imagesearch.models import ModelUnavailable

    app = make_app(models=ModelSettings(clip_model_dir=tmp_path / "missing"))
    warmth = warmth_of(app)
    with pytest.raises(ModelUnavailable):
        warmth.warm_up()
    assert not warmth.warm and "ModelUnavailable" in warmth.error
    status, checks = _ready(app.test_client())
    assert status == 503 and "is not a directory" in checks["models"]

