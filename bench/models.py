"""Costs of the catalogue's models on this machine: dimension, memory, encode time per image and per query.

    .venv/bin/python bench/models.py            # every entry with an offline replica; one JSON line each
    .venv/bin/python bench/models.py --write    # also store them in imagesearch/models/measured.json
    .venv/bin/python bench/models.py --only ViT-B-32/openai

Each model is a replica of the published checkpoint (the same architecture, config and tokenizer,
random weights: imagesearch/dev/replicas) in a private hub cache under $IMAGESEARCH_BENCH_CACHE,
loaded BY ITS HUB NAME through the production loader in a fresh process, so the RSS is that
model's alone. A model's cost does not depend on its weight values. Each line also gives its ratio
to the default model measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CACHE

HF_HOME = CACHE / "hf-home"
MEASURED = Path(__file__).resolve().parents[1] / "imagesearch" / "models" / "measured.json"
DEFAULT = "ViT-B-32/laion2b_s34b_b79k"


def _env() -> dict[str, str]:
    # PASSIVE: on a shared machine OpenMP's spinning waits inflate both wall and CPU time (bench/RESULTS.md).
    return {**os.environ, "HF_HOME": str(HF_HOME), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_WAIT_POLICY": "PASSIVE"}


def _timed(work, repeat: int) -> tuple[float, float]:
    """Best wall ms and best CPU ms (all threads) of ``repeat`` runs: the best is the least disturbed."""
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        work()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return min(wall), min(cpu)


def _install(name: str) -> None:
    from imagesearch.dev.replicas.catalogue import install_replica

    install_replica(name)


def _measure(name: str) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from imagesearch.config import Settings
    from imagesearch.models.captioner import CaptionerSpec, load_captioner
    from imagesearch.models.catalogue import find
    from imagesearch.models.clip import ClipSpec, load_clip
    from imagesearch.vocab import ModelRole

    torch.set_num_threads(2)
    entry = find(name)
    os.environ.update(entry.settings)
    settings = Settings()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for _ in range(8)]
    started = time.perf_counter()
    if entry.role is ModelRole.CAPTIONER:
        os.environ["IMAGESEARCH_CAPTION_MAX_LENGTH"] = "12"
        captioner = load_captioner(CaptionerSpec.from_settings(Settings()))
        load_s = time.perf_counter() - started
        captioner.caption(images[:2])
        wall, cpu = _timed(lambda: captioner.caption(images), 2)
        result = {"ms_per_image": round(wall / len(images), 1), "cpu_ms_per_image": round(cpu / len(images), 1),
                  "new_tokens": 12}
    else:
        clip = load_clip(ClipSpec.from_settings(settings))
        load_s = time.perf_counter() - started
        clip.encode_images(images[:2])
        wall, cpu = _timed(lambda: clip.encode_images(images), 3)
        clip.encode_texts(["warm up"])
        query_wall, query_cpu = _timed(lambda: clip.encode_texts(["two children running in front of a house"]), 15)
        result = {"dim": clip.dim, "ms_per_image": round(wall / len(images), 1),
                  "cpu_ms_per_image": round(cpu / len(images), 1), "ms_per_query": round(query_wall, 1),
                  "cpu_ms_per_query": round(query_cpu, 1)}
    result.update({"name": name, "load_s": round(load_s, 1),
                   "rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})
    return result


def _child(flag: str, name: str) -> str:
    done = subprocess.run([sys.executable, __file__, flag, name], env=_env(), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{flag} {name} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", help="catalogue names to measure (default: all with replicas)")
    parser.add_argument("--write", action="store_true", help="store the figures in imagesearch/models/measured.json")
    parser.add_argument("--child-install", help=argparse.SUPPRESS)
    parser.add_argument("--child-measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_install:
        _install(args.child_install)
        return
    if args.child_measure:
        print(json.dumps(_measure(args.child_measure)))
        return
    from imagesearch.models.catalogue import CATALOGUE

    names = args.only or [e.name for e in CATALOGUE if e.replica]
    if DEFAULT not in names:
        names.insert(0, DEFAULT)
    results: dict[str, dict] = {}
    for name in names:
        print(f"[models] {name}: replica", file=sys.stderr, flush=True)
        _child("--child-install", name)
        print(f"[models] {name}: measuring", file=sys.stderr, flush=True)
        results[name] = json.loads(_child("--child-measure", name).strip().splitlines()[-1])
    base = results[DEFAULT]
    for name, row in results.items():
        for key in ("ms_per_image", "ms_per_query", "cpu_ms_per_image", "cpu_ms_per_query", "rss_mib"):
            if key in row and key in base and results[name] is not base:
                row[f"{key}_vs_default"] = round(row[key] / base[key], 2)
        print(json.dumps({"bench": "models", "threads": 2, **row}))
    if args.write:
        stored = json.loads(MEASURED.read_text()) if MEASURED.is_file() else {}
        for name, row in results.items():
            stored[name] = {k: v for k, v in row.items() if k in ("dim", "rss_mib", "ms_per_image", "ms_per_query",
                                                                 "cpu_ms_per_image", "cpu_ms_per_query")}
        MEASURED.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
