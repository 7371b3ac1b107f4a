"""`imagesearch serve` runs gunicorn with api/gunicorn_conf.py, and gunicorn accepts that file:
its hooks have the arity gunicorn checks, and the app is not preloaded into the master."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import tempfile
from types import SimpleNamespace

from gunicorn.config import Config

from cli import processes
from tests.support.paths import ROOT

CONF = ROOT / "api" / "gunicorn_conf.py"


def test_serve_passes_the_config_file(monkeypatch):
    seen: list[list[str]] = []
    monkeypatch.setattr(processes, "_exec", seen.append)
    monkeypatch.setenv("IMAGESEARCH_BIND_HOST", "")  # serve sets it: restored afterwards
    processes.serve(host="127.0.0.1", port=8123, workers=3, threads=2)
    argv = seen[0]
    assert argv[1:4] == ["-m", "gunicorn", "-c"] and argv[4] == str(CONF) and "api.wsgi:app" in argv
    assert argv[argv.index("-w") + 1] == "3"


def test_gunicorn_accepts_the_config_and_its_hooks():
    cfg = Config()
    names = {name: value for name, value in runpy.run_path(str(CONF)).items() if name in cfg.settings}
    for name, value in names.items():
        cfg.set(name, value)  # gunicorn's own validators: a hook of the wrong arity raises here
    assert {"post_worker_init", "nworkers_changed", "child_exit", "on_exit"} <= set(names)
    assert cfg.preload_app is False


def test_the_master_loads_the_config_without_flask_or_torch():
    # The master only forks: importing the api package there would load Flask and torch.
    code = ("import runpy, sys; runpy.run_path(sys.argv[1]); "
            "print(sorted(m for m in ('flask', 'torch', 'api') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(CONF)], capture_output=True, text=True, timeout=60,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]"


def test_the_master_hooks_keep_the_roster(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # Set (empty: no roster) through monkeypatch, so the value the hook writes is undone afterwards.
    monkeypatch.setenv("IMAGESEARCH_WARM_ROSTER", "")
    conf = runpy.run_path(str(CONF))
    server = SimpleNamespace()
    conf["nworkers_changed"](server, 2, None)
    path = os.environ["IMAGESEARCH_WARM_ROSTER"]  # what the forked workers inherit
    roster = conf["WarmRoster"](path)
    roster.mark_warm(os.getpid(), {"model_s": 0.5})
    roster.mark_warm(999_999_999, {})  # no such process: never counted
    assert roster.count() == (1, 2)
    conf["nworkers_changed"](server, 3, 2)  # TTIN
    assert roster.count() == (1, 3)
    conf["child_exit"](server, SimpleNamespace(pid=os.getpid()))
    assert roster.count() == (0, 3)
    conf["on_exit"](server)
    assert not os.path.exists(path)


def test_a_master_never_shares_an_inherited_roster(tmp_path, monkeypatch):
    inherited = "/somewhere/another/master/left"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("IMAGESEARCH_WARM_ROSTER", inherited)
    conf = runpy.run_path(str(CONF))
    conf["nworkers_changed"](SimpleNamespace(), 1, None)
    assert os.environ["IMAGESEARCH_WARM_ROSTER"] != inherited
    assert os.environ["IMAGESEARCH_WARM_ROSTER"].startswith(str(tmp_path))
    conf["on_exit"](SimpleNamespace())
