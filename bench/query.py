"""Query latency: text encode + search over N stored image vectors in the embedded store.

    .venv/bin/python bench/query.py             # N = 100,000, 200 timed queries
    .venv/bin/python bench/query.py --quick     # N = 20,000, 100 timed queries

The store is filled through the production API (EmbeddedStore.put, then set_image_vectors in
batches of 1,000) with random unit vectors (ViT-B-32: 512 dims), cached under the bench cache
folder and copied for each run. The production path is ``SearchService.search`` (mode image, k=10):
the exact short-text CLIP encoding (text layers pre-packed for oneDNN on CPU, the default), then
``EmbeddedStore.knn`` and ``get_many`` of the hits. The unoptimised path uses a second copy of the
model with torch's stock layers, encodes the full 77-token context (``model.encode_text``) and ranks
with a brute-force NumPy product over every row read straight from SQLite, argsorting all scores.
Both run on the same queries, interleaved, and the returned ids must be identical. For attribution,
the stock model's exact short-text encoding is timed on the same queries too
(``stock_short_encode_p50_ms``): the difference to ``encode_p50_ms`` is the pre-packing.

The first search in a process loads every row (``EmbeddedStore._refresh``): its time and the
process's RSS growth are reported separately (``first_load_s``, ``rss_growth_mib_per_100k``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":
    # Threads as the API process runs them (api/__init__.py): one for torch and one for NumPy's
    # BLAS, unless OMP_NUM_THREADS says otherwise. Must be set before either library loads.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import numpy as np
import torch
import torch.nn.functional as F

from imagesearch.config import Settings
from imagesearch.search import Query, SearchService
from imagesearch.stores.base import Filters
from imagesearch.stores.embedded import EmbeddedStore

DIM = 512
# One query a line; cycled in this order (the first five warm both paths).
QUERIES = """
two children running on a beach
a red car parked in front of a house
dog
sunset over the mountains
a bowl of fruit on a wooden table
people dancing at a wedding
snow covered trees in a forest
a cat sleeping on a sofa
city skyline at night with lights
an old man reading a newspaper in the park
birthday cake with candles
a bicycle leaning against a brick wall
boats in a harbour
green field with cows
a woman in a yellow dress holding an umbrella in the rain
coffee
mountain lake
a plate of pasta with tomato sauce and basil
kids playing football
an airplane in a blue sky
the eiffel tower
a close-up of a flower with a bee
crowd at a concert
a white horse
graduation ceremony with caps in the air
a laptop on a desk next to a cup of tea
christmas tree
surfers riding a large wave at sunrise
a family picnic under a tree
street market with vegetables
black and white portrait of a smiling girl
a train crossing a bridge
two red circles
fireworks
a baby laughing
hiking trail through autumn leaves
a lighthouse on a rocky coast
our holiday in italy 2019, the beach near the hotel with the blue umbrellas
bride
skiing
""".strip().splitlines()


def prepared_store(n: int, identity: str, workdir: Path) -> tuple[Path, float | None]:
    """A copy of the cached n-vector store for this model identity, and its build's seconds (None: cached)."""
    cached, build_s = common.cached_vector_store(n, identity, DIM)
    target = workdir / "store.sqlite3"
    shutil.copyfile(cached, target)
    return target, build_s


def brute_force_matrix(path: Path, identity: str) -> tuple[list[str], np.ndarray]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, image_vec FROM images WHERE status = 'indexed' AND image_model = ? "
                          "ORDER BY rowid", (identity,)).fetchall()
    ids = [r[0] for r in rows]
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), DIM)
    return ids, matrix


def unoptimised(clip, text: str, ids: list[str], matrix: np.ndarray, k: int) -> tuple[list[str], float, float]:
    """Full 77-token encode_text, then scores for every row and a full argsort."""
    started = time.perf_counter()
    tokens = clip.tokenizer([text])
    with torch.inference_mode():
        vector = F.normalize(clip.model.encode_text(tokens).float(), dim=-1).numpy()[0]
    encoded = time.perf_counter()
    scores = matrix @ vector
    order = np.argsort(-scores, kind="stable")[:k]
    done = time.perf_counter()
    return [ids[i] for i in order], (encoded - started) * 1000, (done - encoded) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 vectors, 100 timed queries")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200, help="timed queries (cycling over the query set)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: OMP_NUM_THREADS, 1 unless set, as in the API)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    if args.quick:
        args.n, args.queries = 20_000, 100
    if args.threads:
        torch.set_num_threads(args.threads)

    clip = common.load_vit_b32(args.precision)
    stock = common.load_vit_b32(args.precision, prepack_text=False)
    workdir = Path(tempfile.mkdtemp(prefix="bench-query-"))
    path, build_s = prepared_store(args.n, clip.identity, workdir)
    settings = Settings(_env_file=None, data_dir=workdir)

    # First search in this process: loads every row from SQLite into the NumPy tables.
    store = EmbeddedStore(path)
    service = SearchService(settings, store, clip)
    clip.encode_texts(["warm up"])
    rss_before = common.rss_kib()
    started = time.perf_counter()
    store.knn("image", np.ones(DIM, dtype=np.float32) / np.sqrt(DIM), 1, clip.identity, Filters())
    first_load_s = time.perf_counter() - started
    rss_after = common.rss_kib()
    loaded = len(store._tables[("image", clip.identity)])
    assert loaded == args.n, (loaded, args.n)

    ids, matrix = brute_force_matrix(path, clip.identity)
    for text in QUERIES[:5]:  # warm both paths
        service.search(Query(text=text, mode="image", k=args.k))
        unoptimised(stock, text, ids, matrix, args.k)
        stock.encode_texts([text])

    enc, srch, total, un_enc, un_srch, un_total, stock_enc = [], [], [], [], [], [], []
    mismatches = []
    for i in range(args.queries):
        text = QUERIES[i % len(QUERIES)]
        started = time.perf_counter()
        stock.encode_texts([text])
        stock_enc.append((time.perf_counter() - started) * 1000)
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):  # alternate which path goes first
            if which == 0:
                started = time.perf_counter()
                result = service.search(Query(text=text, mode="image", k=args.k))
                elapsed = (time.perf_counter() - started) * 1000
                got = [h.record.id for h in result.hits]
                enc.append(result.encode_ms)
                srch.append(elapsed - result.encode_ms)
                total.append(elapsed)
            else:
                want, e_ms, s_ms = unoptimised(stock, text, ids, matrix, args.k)
                un_enc.append(e_ms)
                un_srch.append(s_ms)
                un_total.append(e_ms + s_ms)
        if i % 50 == 49:
            common.log(f"{i + 1} queries: p50 {common.percentile(total, 50):.1f} ms, "
                       f"unoptimised p50 {common.percentile(un_total, 50):.1f} ms")
        if got != want and text not in mismatches:
            mismatches.append(text)

    p = common.percentile
    result = {
        "benchmark": "query",
        "n": args.n,
        "dim": DIM,
        "k": args.k,
        "queries_timed": args.queries,
        "distinct_queries": min(len(QUERIES), args.queries),
        "model": f"ViT-B-32 text tower, random weights, {args.precision}",
        "encode_p50_ms": round(p(enc, 50), 2),
        "search_p50_ms": round(p(srch, 50), 2),
        "p50_ms": round(p(total, 50), 2),
        "p99_ms": round(p(total, 99), 2),
        "encode_p99_ms": round(p(enc, 99), 2),
        "search_p99_ms": round(p(srch, 99), 2),
        "prepacked_text_layers": clip.prepacked_text,
        "stock_short_encode_p50_ms": round(p(stock_enc, 50), 2),
        "unoptimised_encode_p50_ms": round(p(un_enc, 50), 2),
        "unoptimised_search_p50_ms": round(p(un_srch, 50), 2),
        "unoptimised_p50_ms": round(p(un_total, 50), 2),
        "unoptimised_p99_ms": round(p(un_total, 99), 2),
        "speedup_p50_vs_unoptimised": round(p(un_total, 50) / p(total, 50), 2),
        "identical_ids": not mismatches,
        "mismatched_queries": mismatches,
        "targets_met": {"p50<=30ms": p(total, 50) <= 30, "p99<=60ms": p(total, 99) <= 60,
                        "identical": not mismatches},
        "first_load_s": round(first_load_s, 3),
        "rss_before_load_mib": round(rss_before / 1024, 1),
        "rss_after_load_mib": round(rss_after / 1024, 1),
        "rss_growth_mib_per_100k": round((rss_after - rss_before) / 1024 * 100_000 / args.n, 1),
        "raw_vector_mib_per_100k": round(100_000 * DIM * 4 / 2**20, 1),
        "store_file_mib": round(path.stat().st_size / 2**20, 1),
        "store_build_s": round(build_s, 1) if build_s is not None else "cached",
        "machine": common.machine(),
    }
    common.emit(result)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
