"""The served API under load on loopback, next to in-process encode + search in the same run.

    .venv/bin/python bench/api_load.py            # 100,000 stored vectors, concurrency 1,2,4,8
    .venv/bin/python bench/api_load.py --quick    # 20,000 vectors, concurrency 1,4, shorter

Starts gunicorn exactly as the Procfile and tests do (``imagesearch.dev.procs.start_api``: 1 worker,
4 threads) on a copy of the store that bench/query.py builds, with ViT-B-32 (random weights) as the
query model and Redis db 9 as the broker (nothing is enqueued). Clients are threads with one
``requests.Session`` each, bounded by count and time, talking to 127.0.0.1 only.

At concurrency 1 the API requests and the in-process ``SearchService.search`` calls (same model
folder, same store file, same queries) alternate one by one, so both see the same machine load;
``api_overhead_ratio`` = API p50 / in-process p50 must stay <= 1.2. The in-process calls run
with the API's thread settings (``OMP_NUM_THREADS``, 1 unless set: one torch and one BLAS thread)
and, if that differs, at one torch thread too; the faster is the baseline.
``api_server_search_p50_ms`` is the search as the API timed it; ``api_http_layers_p50_ms`` the
rest of each request (client, HTTP, gunicorn, Flask, validation, JSON).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

if __name__ == "__main__":
    # The API's thread settings (api/__init__.py) for the in-process baseline; set before torch loads.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import query as query_bench
import requests
import torch

from imagesearch.config import Settings
from imagesearch.dev.procs import start_api
from imagesearch.search import Query, SearchService
from imagesearch.stores.embedded import EmbeddedStore

QUERIES = query_bench.QUERIES


def api_env(data_dir: Path, clip_dir: Path, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGESEARCH_")}
    env.update({
        "IMAGESEARCH_DATA_DIR": str(data_dir),
        "IMAGESEARCH_CLIP_MODEL_DIR": str(clip_dir),
        "IMAGESEARCH_REDIS_URL": "redis://127.0.0.1:6379/9",
        "IMAGESEARCH_REDIS_NAMESPACE": prefix,
        "IMAGESEARCH_STORE": "embedded",
        "IMAGESEARCH_BLOB_BACKEND": "local",
        "IMAGESEARCH_DEVICE": "cpu",
        "IMAGESEARCH_PRECISION": "fp32",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def post(session: requests.Session, base: str, text: str, k: int, timeout: float = 60,
         headers: dict[str, str] | None = None) -> tuple[float, float]:
    """One image-mode search that must return k hits: (round trip ms, the server's took_ms)."""
    started = time.perf_counter()
    response = session.post(f"{base}/v1/search", json={"text": text, "mode": "image", "k": k}, headers=headers,
                            timeout=timeout)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    body = response.json()
    if len(body["hits"]) != k:
        raise RuntimeError(f"expected {k} hits: {response.text[:300]}")
    return elapsed, body["took_ms"]


def load(base: str, clients: int, seconds: float, max_requests: int, k: int) -> dict:
    """``clients`` threads, each with its own Session, until the time or the request budget is spent."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    budget = [max_requests]
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        session = requests.Session()
        i = index
        while time.monotonic() < deadline:
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            try:
                ms, _ = post(session, base, QUERIES[i % len(QUERIES)], k)
                with lock:
                    latencies.append(ms)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
            i += clients

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    wall = time.perf_counter() - started
    p = common.percentile
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "error_sample": errors[:3],
        "wall_s": round(wall, 2),
        "requests_s": round(len(latencies) / wall, 2),
        "p50_ms": round(p(latencies, 50), 2) if latencies else None,
        "p99_ms": round(p(latencies, 99), 2) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=150, help="alternating API / in-process queries at concurrency 1")
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--seconds", type=float, default=15.0, help="per concurrency level")
    parser.add_argument("--max-requests", type=int, default=2000, help="per concurrency level")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--api-torch-threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the API process (default: the API's own, 1; see api/__init__.py)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.pairs, args.concurrency, args.seconds = 20_000, 40, "1,4", 6.0

    clip = common.load_vit_b32("fp32")
    workdir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    query_bench.prepared_store(args.n, clip.identity, workdir)
    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    env = api_env(workdir, common.vit_b32_dir(), prefix)
    if args.api_torch_threads:
        env["OMP_NUM_THREADS"] = str(args.api_torch_threads)
    started = time.perf_counter()
    api, base = start_api(env, workdir / "logs")
    api_start_s = time.perf_counter() - started
    try:
        session = requests.Session()
        started = time.perf_counter()
        post(session, base, "warm up: loads every stored vector", args.k)
        api_first_query_s = time.perf_counter() - started

        # In-process: the same code the view calls, on the same store file and model folder.
        settings = Settings(_env_file=None, data_dir=workdir)
        service = SearchService(settings, EmbeddedStore(workdir / "store.sqlite3"), clip)
        for text in QUERIES[:5]:
            service.search(Query(text=text, mode="image", k=args.k))
            post(session, base, text, args.k)

        # In-process runs at 1 torch thread and at torch's default (all cores); the faster p50 is
        # the baseline (the conservative choice: on a shared machine one thread is often faster).
        default_threads = torch.get_num_threads()
        thread_counts = sorted({1, default_threads})
        api_ms: list[float] = []
        server_ms: list[float] = []  # the search as the API process timed it (the response's took_ms)
        inproc: dict[int, list[float]] = {t: [] for t in thread_counts}
        for i in range(args.pairs):
            text = QUERIES[i % len(QUERIES)]
            order = ["api"] + thread_counts
            order = order if i % 2 == 0 else order[::-1]
            for which in order:
                if which == "api":
                    elapsed, took = post(session, base, text, args.k)
                    api_ms.append(elapsed)
                    server_ms.append(took)
                else:
                    torch.set_num_threads(which)
                    t0 = time.perf_counter()
                    result = service.search(Query(text=text, mode="image", k=args.k))
                    inproc[which].append((time.perf_counter() - t0) * 1000)
                    torch.set_num_threads(default_threads)
                    assert len(result.hits) == args.k
        best_threads = min(thread_counts, key=lambda t: common.percentile(inproc[t], 50))
        inproc_ms = inproc[best_threads]

        levels = [load(base, int(c), args.seconds, args.max_requests, args.k) for c in args.concurrency.split(",")]
    finally:
        api.close()
        common.drop_redis_keys(env["IMAGESEARCH_REDIS_URL"], prefix)

    p = common.percentile
    ratio = p(api_ms, 50) / p(inproc_ms, 50)
    result = {
        "benchmark": "api_load",
        "n": args.n,
        "k": args.k,
        "server": "imagesearch serve --workers 1 --threads 4 (gunicorn; imagesearch.dev.procs.start_api)",
        "api_omp_num_threads": env.get("OMP_NUM_THREADS", "1 (the API's default)"),
        "model": "ViT-B-32, random weights, fp32",
        "api_start_s": round(api_start_s, 2),
        "api_first_query_s": round(api_first_query_s, 3),
        "pairs_c1": args.pairs,
        "inproc_threads": best_threads,
        "inproc_p50_ms_by_threads": {str(t): round(p(v, 50), 2) for t, v in inproc.items()},
        "inproc_p50_ms": round(p(inproc_ms, 50), 2),
        "inproc_p99_ms": round(p(inproc_ms, 99), 2),
        "api_c1_p50_ms": round(p(api_ms, 50), 2),
        "api_c1_p99_ms": round(p(api_ms, 99), 2),
        "api_overhead_ratio": round(ratio, 3),
        "api_overhead_p50_ms": round(p(api_ms, 50) - p(inproc_ms, 50), 2),
        "api_server_search_p50_ms": round(p(server_ms, 50), 2),
        "api_http_layers_p50_ms": round(p([a - b for a, b in zip(api_ms, server_ms)], 50), 2),
        "targets_met": {"api_p50<=1.2x_inproc_at_c1": ratio <= 1.2},
        "load": levels,
        "machine": common.machine(),
    }
    common.emit(result)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
