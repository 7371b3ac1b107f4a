"""gunicorn's settings and hooks for ``imagesearch serve``, which passes this file's path to ``-c``.

Every worker warms before it takes its first request: ``post_worker_init`` runs after the worker
imported the app and before its accept loop, so it loads the query encoder and the store's vectors
(``Services.warm``) while connections wait in the listen backlog. A worker that gunicorn restarts
goes through the same hook, so it never serves cold either.

Readiness means every worker is warm, but one ``/readyz`` answer comes from one worker, so the
workers of one master share a roster: a folder the master creates, holding one file per warm
worker's pid and the worker count the master keeps (``expected``). The master writes the count
whenever it changes (``nworkers_changed``: at start, on TTIN/TTOU) and forgets a worker when it
reaps it (``child_exit``); ``/readyz`` counts the live warm workers against the count.

The master loads this file by its path, not as ``api.gunicorn_conf``: importing the ``api``
package would load Flask and torch into a process that only forks. So it imports the standard
library only, and the app's half (``api.health``) imports it as a module.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The app is imported and warmed in each worker, after the fork, never in the master. Preloading
# would let the workers share the model weights and the vectors copy-on-write, but warming runs
# torch (its OpenMP and oneDNN thread pools) and opens SQLite connections, and neither may cross a
# fork. The price is a copy of the model and of the vectors per worker (4 bytes x dim per vector:
# 200 MB per 100,000 at 512 dims); a store too large for that belongs in OpenSearch. Each worker
# then applies later writes itself, as every process does (the store's incremental refresh).
preload_app = False

# Set by the master for the workers it forks; not a setting.
ROSTER_ENV = "IMAGESEARCH_WARM_ROSTER"
_EXPECTED = "expected"
_WARM_SUFFIX = ".warm"
# How often the warming worker tells the master it is alive: its --timeout also runs while it
# loads, and loading a large store can take longer than that.
_HEARTBEAT_S = 1.0

log = logging.getLogger("api.warm")


class WarmRoster:
    """Which workers of one gunicorn master are warm: ``<pid>.warm`` files and ``expected``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls) -> WarmRoster:
        return cls(Path(tempfile.mkdtemp(prefix="imagesearch-warm-")))

    @classmethod
    def from_env(cls) -> WarmRoster | None:
        """The roster of the master this process was forked from; None outside ``imagesearch serve``."""
        path = os.environ.get(ROSTER_ENV)
        return cls(Path(path)) if path else None

    def expect(self, workers: int) -> None:
        self._write(self.path / _EXPECTED, str(workers))

    def mark_warm(self, pid: int, timings: dict[str, float]) -> None:
        self._write(self.path / f"{pid}{_WARM_SUFFIX}", json.dumps(timings))

    def forget(self, pid: int) -> None:
        (self.path / f"{pid}{_WARM_SUFFIX}").unlink(missing_ok=True)

    def count(self) -> tuple[int, int]:
        """(live warm workers, workers the master keeps); the count is 0 when it cannot be read."""
        try:
            expected = int((self.path / _EXPECTED).read_text())
        except (OSError, ValueError):
            expected = 0
        warm = 0
        for marker in self.path.glob(f"*{_WARM_SUFFIX}"):
            try:
                pid = int(marker.name[:-len(_WARM_SUFFIX)])
            except ValueError:
                continue
            if _alive(pid):
                warm += 1
        return warm, expected

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    @staticmethod
    def _write(path: Path, text: str) -> None:
        # Rename over the old file, so a reader in another process never sees a half-written one.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)


def _alive(pid: int) -> bool:
    # The master removes a reaped worker's file; this also covers one it never got to reap.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return True


# -- the master's hooks --------------------------------------------------------------------------

_roster: WarmRoster | None = None


def _master_roster() -> WarmRoster:
    """This master's roster, created on first use; its path reaches the workers through the
    environment they inherit (a path inherited from another master is replaced, never shared)."""
    global _roster
    if _roster is None:
        _roster = WarmRoster.create()
        os.environ[ROSTER_ENV] = str(_roster.path)
    return _roster


def nworkers_changed(server: Any, new_value: int, old_value: int | None) -> None:
    _master_roster().expect(new_value)


def child_exit(server: Any, worker: Any) -> None:
    _master_roster().forget(worker.pid)


def on_exit(server: Any) -> None:
    if _roster is not None:
        _roster.remove()


# -- the worker's hook ---------------------------------------------------------------------------

def post_worker_init(worker: Any) -> None:
    """Warm this worker before its accept loop starts.

    An unreachable store is waited for: the worker serves, not ready, and keeps retrying in the
    background. Any other failure (the model's files missing, a misconfigured model) is raised:
    gunicorn then stops the whole server ("Worker failed to boot", exit status 3), so the process
    manager sees the API exit and the log says why. Serving on would leave a process that answers
    /healthz and fails every search, which no restart policy notices."""
    from api.health import warmth_of

    warmth = warmth_of(worker.wsgi)
    try:
        with _heartbeat(worker):
            warm = warmth.warm_up()
    except Exception as exc:
        log.critical("cannot warm this API worker, stopping the server: %s: %s", type(exc).__name__, exc)
        raise
    if not warm:
        warmth.keep_trying()
        return
    # One request through the app in-process: Flask's and Werkzeug's first request pays for
    # caches they fill once (type checks, response building), measured at about 1 ms of the
    # first search's 2.4 ms of extra HTTP-layer time. /readyz changes nothing.
    worker.wsgi.test_client().get("/readyz")


@contextmanager
def _heartbeat(worker: Any) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(_HEARTBEAT_S):
            worker.notify()

    thread = threading.Thread(target=beat, name="warm-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
