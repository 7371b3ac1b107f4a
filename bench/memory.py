"""Peak memory of the service's processes with real-size models, and the store's growth per 100k.

    .venv/bin/python bench/memory.py            # 100,000 stored vectors, 16 uploads (8 x 12 MP, 8 x 1 MP)
    .venv/bin/python bench/memory.py --quick    # 20,000 vectors, 4 uploads

Starts the API (gunicorn), one embed worker and one caption worker (Celery, -c 1) through
``imagesearch.dev.procs`` exactly as the tests and the demo do, with ViT-B-32 (random weights) as CLIP
and a ViT-base + GPT-2 small VisionEncoderDecoder (random weights, bench/caption.py) as captioner;
Redis db 9, a unique queue prefix. The data folder starts with the store bench/query.py builds
(N image vectors), so the API's first search loads N vectors. Images are uploaded over HTTP, the
run waits until each is indexed and captioned, then searches.

Reported per process tree (the Celery parent and its pool child, gunicorn's arbiter and worker):
VmHWM (peak resident set) of each process from /proc/<pid>/status, their sum, and the peaks of
the tree's summed VmRSS and summed Pss (smaps_rollup: pages shared between the Celery parent and
its forked child counted once) sampled every 0.25 s. ``store_growth_mib_per_100k`` comes from a fresh
subprocess that opens the store and loads every vector (RSS after minus before, scaled to 100k).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api_load
import caption as caption_bench
import common
import query as query_bench
import requests

from imagesearch.dev.procs import start_api, start_worker, wait_until

STORE_PROBE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from imagesearch.stores.base import Filters
from imagesearch.stores.embedded import EmbeddedStore

def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])

store = EmbeddedStore(sys.argv[2])
before = rss()
started = time.perf_counter()
store.knn('image', np.ones(512, dtype=np.float32), 1, sys.argv[3], Filters())
seconds = time.perf_counter() - started
after = rss()
table = store._tables[('image', sys.argv[3])]
print(json.dumps({'rows': len(table), 'before_kib': before, 'after_kib': after, 'load_s': seconds,
                  'matrix_capacity_vectors': table.capacity}))
"""


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        if Path(f"/proc/{p}").exists():
            pids.append(p)
            todo += children(p)
    return pids


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (a forked pool child shares its parent's) counted once."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler:
    """Samples the summed VmRSS of each process tree; remembers every pid's last VmHWM."""

    def __init__(self, roots: dict[str, int], interval: float = 0.25) -> None:
        self.roots, self.interval = roots, interval
        self.peak_tree_rss = {name: 0 for name in roots}
        self.peak_tree_pss = {name: 0 for name in roots}
        self.hwm: dict[str, dict[int, int]] = {name: {} for name in roots}
        self.cmd: dict[int, str] = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        for name, root in self.roots.items():
            total = pss = 0
            for pid in tree(root):
                total += status_kib(pid, "VmRSS")
                pss += pss_kib(pid)
                hwm = status_kib(pid, "VmHWM")
                if hwm:
                    self.hwm[name][pid] = max(hwm, self.hwm[name].get(pid, 0))
                if pid not in self.cmd:
                    try:
                        self.cmd[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
                    except OSError:
                        pass
            self.peak_tree_rss[name] = max(self.peak_tree_rss[name], total)
            self.peak_tree_pss[name] = max(self.peak_tree_pss[name], pss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()
        self.sample()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--uploads", type=int, default=16, help="half 12 MP, half 1 MP")
    parser.add_argument("--searches", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for indexing + captions")
    args = parser.parse_args()
    if args.quick:
        args.n, args.uploads, args.searches = 20_000, 4, 10

    clip = common.load_vit_b32("fp32")
    identity = clip.identity
    del clip
    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    query_bench.prepared_store(args.n, identity, workdir)

    probe = subprocess.run([sys.executable, "-c", STORE_PROBE, str(common.ROOT), str(workdir / "store.sqlite3"),
                            identity], capture_output=True, text=True, timeout=600)
    store_probe = json.loads(probe.stdout.strip().splitlines()[-1])

    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    env = api_load.api_env(workdir, common.vit_b32_dir(), prefix)
    env["IMAGESEARCH_CAPTIONER_DIR"] = str(caption_bench.captioner_dir(24))
    env["IMAGESEARCH_CAPTION_MAX_LENGTH"] = "24"
    photos = common.photo_set(args.uploads)
    logs = workdir / "logs"
    started_procs = []
    result: dict = {}
    try:
        api, base = start_api(env, logs)
        started_procs.append(api)
        embed = start_worker(env, logs, "worker-embed", ("embed",))
        started_procs.append(embed)
        cap = start_worker(env, logs, "worker-caption", ("caption",))
        started_procs.append(cap)
        roots = {"api": api.popen.pid, "embed_worker": embed.popen.pid, "caption_worker": cap.popen.pid}
        idle = {name: sum(status_kib(p, "VmRSS") for p in tree(pid)) for name, pid in roots.items()}
        sampler = Sampler(roots)

        session = requests.Session()
        t0 = time.perf_counter()
        ids = []
        for i, data in enumerate(photos):
            r = session.post(f"{base}/v1/images", files={"file": (f"{i}.jpg", data, "image/jpeg")},
                             data={"collection": "bench"}, timeout=120)
            r.raise_for_status()
            ids.append(r.json()["id"])

        def all_done() -> bool:
            states = [session.get(f"{base}/v1/images/{i}", timeout=60).json() for i in ids]
            bad = [s for s in states if s.get("status") == "failed" or s.get("caption_status") == "failed"]
            if bad:
                raise RuntimeError(f"processing failed: {bad[:2]}")
            return all(s.get("status") == "indexed" and s.get("caption_status") == "done" for s in states)

        wait_until(all_done, args.timeout, 1.0, "all uploads indexed and captioned")
        processing_s = time.perf_counter() - t0
        for i in range(args.searches):
            r = session.post(f"{base}/v1/search", json={"text": query_bench.QUERIES[i % len(query_bench.QUERIES)],
                                                        "mode": "hybrid", "k": 10}, timeout=120)
            r.raise_for_status()
        sampler.stop()

        procs = {}
        for name in roots:
            per_pid = {str(pid): {"vmhwm_mib": round(kib / 1024, 1), "cmd": sampler.cmd.get(pid, "")}
                       for pid, kib in sampler.hwm[name].items()}
            procs[name] = {
                "idle_tree_rss_mib": round(idle[name] / 1024, 1),
                "peak_tree_rss_mib_sampled": round(sampler.peak_tree_rss[name] / 1024, 1),
                "peak_tree_pss_mib_sampled": round(sampler.peak_tree_pss[name] / 1024, 1),
                "sum_vmhwm_mib": round(sum(sampler.hwm[name].values()) / 1024, 1),
                "max_process_vmhwm_mib": round(max(sampler.hwm[name].values(), default=0) / 1024, 1),
                "processes": per_pid,
            }
        result = {
            "benchmark": "memory",
            "n": args.n,
            "uploads": args.uploads,
            "upload_sizes": "half 4000x3000, half 1152x864 JPEG q90",
            "models": {"clip": "ViT-B-32 random weights fp32",
                       "captioner": "ViT-base/16 + GPT-2 small VisionEncoderDecoder, random weights, fp32"},
            "processing_s": round(processing_s, 1),
            "api_peak_rss_mib": procs["api"]["peak_tree_rss_mib_sampled"],
            "embed_worker_peak_rss_mib": procs["embed_worker"]["peak_tree_rss_mib_sampled"],
            "caption_worker_peak_rss_mib": procs["caption_worker"]["peak_tree_rss_mib_sampled"],
            "peak_pss_mib": {name: procs[name]["peak_tree_pss_mib_sampled"] for name in procs},
            "peak_vmhwm_largest_process_mib": {name: procs[name]["max_process_vmhwm_mib"] for name in procs},
            "store_growth_mib_per_100k": round((store_probe["after_kib"] - store_probe["before_kib"]) / 1024
                                               * 100_000 / store_probe["rows"], 1),
            "store_load_s": round(store_probe["load_s"], 3),
            "store_probe": store_probe,
            "raw_vectors_mib_per_100k": round(100_000 * 512 * 4 / 2**20, 1),
            "processes": procs,
            "machine": common.machine(),
        }
    finally:
        for proc in reversed(started_procs):
            proc.close()
        common.drop_redis_keys(env["IMAGESEARCH_REDIS_URL"], prefix)
    common.emit(result)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
