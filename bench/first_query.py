"""The first query a freshly started API answers, against the same API's warm queries.

    .venv/bin/python bench/first_query.py            # 100,000 stored vectors, 2 workers
    .venv/bin/python bench/first_query.py --quick    # 20,000 vectors

Starts the real ``imagesearch serve --workers 2 --threads 4`` (gunicorn with api/gunicorn_conf.py)
on a copy of an embedded store filled with N random unit vectors for the demo CLIP's identity
(models/demo/clip; the store is built through ``EmbeddedStore.put`` and ``set_image_vectors`` once
and cached under the bench cache folder). It waits for ``/readyz``, then sends the first query and
``--warm`` more, each on a new connection as separate users' first requests arrive, so both
workers take some (one keep-alive connection would stay on one worker).

``first_query_ms`` is the first query's round trip; ``warm_p50_ms`` the median of the others;
``ratio`` = first / warm p50 must be <= 2. ``*_search_ms`` is the search as the response times
it (``took_ms``: encode, kNN, records). Each worker's first request as its ``search`` log line
times it (pid and took_ms: the whole view) is compared with the median of the later ones
(``first_per_worker``), since a cold worker shows there even when the first query went to a
warm one.

``--cold`` (on by default) also starts the same app under plain ``gunicorn api.wsgi:app``, without
the config that warms the workers: there ``/readyz`` warms only the worker that answers it, which
is how the API started before the warm hook. Its figures are the ``cold_*`` keys, for comparison.
Redis db 9 is the broker (nothing is enqueued).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the API's own default (api/__init__.py)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api_load
import common
import query as query_bench
import requests

from imagesearch.config import ModelSettings, Settings
from imagesearch.dev.procs import ManagedProcess, free_port, imagesearch_command, wait_api_ready
from imagesearch.models import get_clip

DEMO_CLIP = common.ROOT / "models" / "demo" / "clip"
DEMO_CAPTIONER = common.ROOT / "models" / "demo" / "captioner"
QUERIES = query_bench.QUERIES
BOUND = 2.0


def search(base: str, text: str, k: int) -> tuple[float, float]:
    """One query on a new connection: (round trip ms, the server's took_ms)."""
    with requests.Session() as session:  # what requests.post does: a fresh connection each time
        return api_load.post(session, base, text, k, timeout=120, headers={"Connection": "close"})


def server_searches(log_text: str) -> list[tuple[int, float]]:
    """(pid, took_ms) of every search the API logged, in order."""
    out = []
    for line in log_text.splitlines():
        if line.startswith("{") and '"message": "search"' in line:
            entry = json.loads(line)
            out.append((int(entry["pid"]), float(entry["took_ms"])))
    return out


def run_api(args: argparse.Namespace, env: dict[str, str], store: Path, workdir: Path, warm_hook: bool) -> dict:
    """Start an API on a fresh copy of ``store``, wait for /readyz, time the first and the warm
    queries, stop it."""
    name = "api-warm" if warm_hook else "api-cold"
    data_dir = workdir / name
    data_dir.mkdir(parents=True)
    shutil.copyfile(store, data_dir / "store.sqlite3")
    env = {**env, "IMAGESEARCH_DATA_DIR": str(data_dir)}
    port = free_port()
    if warm_hook:
        argv = imagesearch_command("serve", "--host", "127.0.0.1", "--port", str(port),
                                   "--workers", str(args.workers), "--threads", "4")
    else:  # the same server without api/gunicorn_conf.py; serve's loopback bind (keys optional) by hand
        env["IMAGESEARCH_BIND_HOST"] = "127.0.0.1"
        argv = [sys.executable, "-m", "gunicorn", "api.wsgi:app", "-b", f"127.0.0.1:{port}",
                "-w", str(args.workers), "--threads", "4", "--timeout", "120"]
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    api = ManagedProcess(argv, env, workdir / f"{name}.log", cwd=workdir)
    try:
        wait_api_ready(api, base, 300, interval=0.2, request_timeout=60)
        ready_s = time.perf_counter() - started
        first_ms, first_took = search(base, QUERIES[0], args.k)
        warm_ms, warm_took = [], []
        for i in range(args.warm):
            ms, took = search(base, QUERIES[1 + i % (len(QUERIES) - 1)], args.k)
            warm_ms.append(ms)
            warm_took.append(took)
        time.sleep(0.5)  # the last log lines
        logged = server_searches(api.output())
    finally:
        api.close()
    firsts: dict[int, float] = {}
    later: list[float] = []
    for pid, took in logged:
        if pid in firsts:
            later.append(took)
        else:
            firsts[pid] = took
    warm_view_p50 = common.median(later)
    warm_p50 = common.median(warm_ms)
    return {
        "ready_s": round(ready_s, 2),
        "first_query_ms": round(first_ms, 2),
        "first_query_search_ms": round(first_took, 2),
        "warm_p50_ms": round(warm_p50, 2),
        "warm_search_p50_ms": round(common.median(warm_took), 2),
        "ratio": round(first_ms / warm_p50, 3),
        "warm_view_p50_ms": round(warm_view_p50, 2),
        "first_per_worker": [{"pid": pid, "view_ms": round(took, 2), "ratio": round(took / warm_view_p50, 3)}
                             for pid, took in firsts.items()],
        "workers_that_served": len(firsts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 vectors, 30 warm queries")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--warm", type=int, default=60, help="warm queries after the first")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--no-cold", dest="cold", action="store_false",
                        help="skip the comparison API without the warm hook")
    args = parser.parse_args()
    if args.quick:
        args.n, args.warm = 20_000, 30

    settings = Settings(_env_file=None, models=ModelSettings(clip_model_dir=DEMO_CLIP, captioner_dir=DEMO_CAPTIONER,
                                                              device="cpu", precision="fp32"))
    clip = get_clip(settings)
    workdir = Path(tempfile.mkdtemp(prefix="bench-first-query-"))
    store, _ = common.cached_vector_store(args.n, clip.identity, clip.dim)
    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    env = api_load.api_env(workdir, DEMO_CLIP, prefix)
    env["IMAGESEARCH_CAPTIONER_DIR"] = str(DEMO_CAPTIONER)
    env["PYTHONPATH"] = str(common.ROOT)
    try:
        warm = run_api(args, env, store, workdir, warm_hook=True)
        cold = run_api(args, env, store, workdir, warm_hook=False) if args.cold else None
    finally:
        common.drop_redis_keys(env["IMAGESEARCH_REDIS_URL"], prefix)

    per_worker_ok = all(w["ratio"] <= BOUND for w in warm["first_per_worker"])
    result = {
        "benchmark": "first_query",
        "n": args.n,
        "k": args.k,
        "server": f"imagesearch serve --workers {args.workers} --threads 4 (gunicorn, api/gunicorn_conf.py)",
        "model": f"demo CLIP ({clip.identity}, dim {clip.dim}), fp32",
        **warm,
        "bound": f"first_query_ms <= {BOUND} x warm_p50_ms",
        "targets_met": {"first<=2x_warm_p50": warm["ratio"] <= BOUND,
                        "each_worker_first<=2x_warm_view_p50": per_worker_ok},
    }
    if cold is not None:
        result.update({f"cold_{key}": value for key, value in cold.items()})
        result["cold_server"] = f"gunicorn api.wsgi:app -w {args.workers} --threads 4 (no warm hook)"
    result["machine"] = common.machine()
    common.emit(result)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
