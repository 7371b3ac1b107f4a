"""`imagesearch serve` warms every gunicorn worker before it serves, and /readyz answers ready
only when all of them are warm (api/gunicorn_conf.py), including a worker gunicorn restarts."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
from pathlib import Path

import numpy as np
import requests

from imagesearch.config import Settings
from imagesearch.dev.procs import ManagedProcess, free_port, imagesearch_command, wait_until
from imagesearch.models import get_clip
from imagesearch.records import ImageRecord
from imagesearch.stores.base import ImageVectorUpdate
from imagesearch.stores.embedded import EmbeddedStore
from tests.support.processes import child_env

STORED = 5000
_BOOTING = re.compile(r"Booting worker with pid: (\d+)")


def _fill(path: Path, n: int, identity: str, dim: int) -> None:
    """n indexed records with random unit vectors, as the embed worker would leave them."""
    store = EmbeddedStore(path)
    rng = np.random.default_rng(0)
    for start in range(0, n, 1000):
        ids = [f"img{i:06d}" for i in range(start, min(n, start + 1000))]
        for image_id in ids:
            store.put(ImageRecord(id=image_id, blob_key=f"originals/{image_id}", content_hash="h" + image_id))
        vectors = rng.standard_normal((len(ids), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.set_image_vectors([ImageVectorUpdate(id=i, content_hash="h" + i, vector=v, model=identity,
                                                   thumb_key=f"thumbs/{i}.jpg", width=64, height=64)
                                 for i, v in zip(ids, vectors)])
    store.close()


def _log_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _pids_with(output: str, message: str) -> set[int]:
    """The pids whose log lines start with ``message``."""
    return {entry["pid"] for entry in _log_lines(output) if entry["message"].startswith(message)}


def _searches(output: str) -> list[tuple[int, float]]:
    """(pid, took_ms) of each search the API logged, in order (took_ms: the whole view)."""
    return [(entry["pid"], entry["took_ms"]) for entry in _log_lines(output) if entry["message"] == "search"]


def _serve(data_dir: Path, workers: int, **extra: str) -> tuple[ManagedProcess, str]:
    port = free_port()
    args = imagesearch_command("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
                               "--threads", "4")
    return (ManagedProcess(args, child_env(data_dir, **extra), data_dir.parent / "api.log", cwd=data_dir.parent),
            f"http://127.0.0.1:{port}")


def _wait_ready(api: ManagedProcess, base: str, not_ready: list[dict]) -> str:
    """Poll /readyz until it answers 200; the log as it was at that moment. Other answers go to
    ``not_ready``."""

    def ready() -> str | bool:
        if api.popen.poll() is not None:
            raise RuntimeError(f"the API exited:\n{api.output()[-3000:]}")
        try:
            response = requests.get(base + "/readyz", timeout=30)
        except requests.ConnectionError:
            return False
        if response.status_code == 200:
            return api.output() or True
        not_ready.append(response.json()["checks"])
        return False

    return wait_until(ready, 240, 0.05, "API ready")


def test_ready_only_when_every_worker_is_warm_and_first_queries_are_fast(redis_client, data_dir):
    clip = get_clip(Settings())
    _fill(data_dir / "store.sqlite3", STORED, clip.identity, clip.dim)
    api, base = _serve(data_dir, workers=2)
    try:
        not_ready: list[dict] = []
        at_ready = _wait_ready(api, base, not_ready)
        booted = {int(pid) for pid in _BOOTING.findall(at_ready)}
        warm = _pids_with(at_ready, "API process warm")
        # Both workers loaded the model and warmed before the first ready answer.
        assert len(booted) == 2 and warm == booted, at_ready[-3000:]
        assert booted <= _pids_with(at_ready, "loaded CLIP")
        assert all(checks.get("workers", "ok") != "ok" for checks in not_ready), not_ready

        # A worker that dies is replaced, and readiness waits for the new one to warm.
        victim = min(booted)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(_BOOTING.findall(api.output())) == 3, 60, 0.05, "a replacement worker")
        not_ready = []
        at_ready = _wait_ready(api, base, not_ready)
        replacement = {int(pid) for pid in _BOOTING.findall(at_ready)} - booted
        assert len(replacement) == 1 and replacement <= _pids_with(at_ready, "API process warm"), at_ready[-3000:]
        assert "error: 1 of 2 workers warm" in {checks.get("workers") for checks in not_ready}, not_ready
        serving = booted - {victim} | replacement

        # Queries on new connections (as separate users' first requests) until both workers took
        # some: each worker's first search costs about what its later ones do, no model loading.
        def searched_by_both() -> bool:
            response = requests.post(base + "/v1/search", json={"text": "a red circle", "k": 5},
                                     headers={"Connection": "close"}, timeout=60)
            assert response.status_code == 200 and len(response.json()["hits"]) == 5, response.text
            return serving <= {pid for pid, _ in _searches(api.output())}

        wait_until(searched_by_both, 120, 0.0, "a search on each worker")
        for _ in range(10):
            searched_by_both()
        searches = _searches(api.output())
        for pid in serving:
            first, *later = [took for p, took in searches if p == pid]
            baseline = statistics.median(later or [took for _, took in searches])
            # Loading the tiny model alone takes hundreds of ms; noise on a shared machine, tens.
            assert first <= 5 * baseline + 50, (pid, first, later)
    finally:
        api.close()


def test_a_model_that_cannot_load_stops_the_server_with_its_reason(redis_client, data_dir, tmp_path):
    missing = tmp_path / "no-such-model"
    api, _ = _serve(data_dir, workers=1, IMAGESEARCH_CLIP_MODEL_DIR=str(missing))
    try:
        api.popen.wait(180)
        output = api.output()
        # gunicorn's exit status for a worker that failed to boot, not a server answering 503s.
        assert api.popen.returncode == 3, output[-3000:]
        assert "cannot warm this API worker, stopping the server: ModelUnavailable" in output
        assert str(missing) in output and "Worker failed to boot" in output
    finally:
        api.close()

