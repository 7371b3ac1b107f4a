"""Time to searchable: upload -> indexed and upload -> captioned at a steady upload rate (issue 15).

    .venv/bin/python bench/time_to_searchable.py                      # 5 uploads/s for 60 s, flush 0.5 s and 0.1 s
    .venv/bin/python bench/time_to_searchable.py --quick              # 5 uploads/s for 15 s, flush 0.5 s only
    .venv/bin/python bench/time_to_searchable.py --flush-seconds 0.5,0.25,0.1 --rate 8 --duration 120
    .venv/bin/python bench/time_to_searchable.py --models full --duration 30 --flush-seconds 0.5

``--models demo`` (the default) runs the demo models of ``models/demo/`` (sub-megabyte, 64 px), as
the issue asks; ``--models full`` runs models of production size with random weights, built and
cached as the other benchmarks build them: ViT-B-32 (``common.vit_b32_dir``) and the vit-gpt2
architecture captioner writing 24-token captions (``caption.captioner_dir``), to show what the
same stack does when the models cost what real ones do.

Runs the real stack, as the Procfile does (``imagesearch.dev.procs.local_stack``: gunicorn API, one
embed worker, one caption worker, Celery over Redis, the embedded store), with the demo models
(``models/demo/``), once per value of ``IMAGESEARCH_BATCH_FLUSH_SECONDS``: the setting that trades
latency against batch size. A worker runs a batch when ``EMBED_FLUSH_EVERY`` (64) messages
arrived or when ``BATCH_FLUSH_SECONDS`` passed, so at 5 uploads/s a batch is the uploads of one
flush period: a longer period gives bigger batches (better model throughput per image) and a longer
wait in each of the two stages.

The client uploads generated 1 MP photo-like JPEGs (1155x866, quality 90, each with an EXIF
DateTimeOriginal) over HTTP on a fixed schedule (open loop: upload ``i`` starts at ``t0 + i/rate``,
from a few threads, so a slow response does not delay the next upload), and polls
``GET /v1/images/<id>`` of every image not yet settled every ``--poll-interval`` seconds.

Two measurements of the same uploads:
- ``client``: from just before the POST to the first GET that shows ``status: indexed`` (or
  ``caption_status: done``). This is what a client sees; the embedded store refreshes its vectors
  before every search, so an image whose record reads indexed is in the next search's results. The
  polling adds up to one poll interval (``poll_cycle_s`` says what it achieved) plus one GET.
- ``server``: the workers' histograms (``imagesearch_upload_to_indexed_seconds``,
  ``imagesearch_upload_to_captioned_seconds``, from /metrics), record ``created_at`` to the return
  of the store write, with ``histogram_quantile``'s interpolation within buckets; ``le_1s`` etc.
  are exact fractions, since the targets are bucket bounds.

The checks are the issue's targets at 5 uploads/s: indexed p50 <= 1 s and p99 <= 3 s, captioned
p50 <= 2 s, on the client figures. Prints ONE JSON line (progress on stderr).
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
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # puts the repo root on sys.path
import requests
from PIL import Image

from imagesearch.dev.procs import local_stack

SIZE = (1155, 866)  # 1.0 MP
DEMO = common.ROOT / "models" / "demo"
TARGETS = {"indexed_p50_s": 1.0, "indexed_p99_s": 3.0, "captioned_p50_s": 2.0}
HISTOGRAMS = {"indexed": "imagesearch_upload_to_indexed_seconds",
              "captioned": "imagesearch_upload_to_captioned_seconds"}
TAKEN_AT_BASE = datetime(2024, 5, 1, 9, 0, 0, tzinfo=UTC).timestamp()


# -- inputs --------------------------------------------------------------------------------------

def with_exif_date(jpeg: bytes, when: float) -> bytes:
    """The same JPEG with an EXIF APP1 segment (DateTimeOriginal + offset) spliced in after SOI:
    no re-encoding, so the pixels and the compressed size stay those of the cached photo."""
    exif = Image.Exif()
    exif.get_ifd(0x8769).update({0x9003: datetime.fromtimestamp(when, UTC).strftime("%Y:%m:%d %H:%M:%S"),
                                 0x9011: "+00:00"})
    payload = exif.tobytes()  # starts with b"Exif\0\0"
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def photos(count: int) -> list[bytes]:
    started = time.perf_counter()
    out = common.photo_set(count, sizes=(SIZE,), seed=15_000)
    common.log(f"{count} photos {SIZE[0]}x{SIZE[1]} ready ({time.perf_counter() - started:.1f} s, "
               f"{sum(map(len, out)) / len(out) / 1e3:.0f} kB each)")
    return out


# -- the stack -----------------------------------------------------------------------------------

def model_dirs(which: str) -> tuple[Path, Path, str]:
    """(CLIP folder, captioner folder, label) for ``--models``."""
    if which == "demo":
        for part in ("clip", "captioner"):
            if not any((DEMO / part).glob("*.safetensors")):
                raise SystemExit(f"the demo {part} is missing under {DEMO / part}")
        return DEMO / "clip", DEMO / "captioner", "demo (models/demo/clip, models/demo/captioner)"
    import caption as caption_bench

    return (common.vit_b32_dir(), caption_bench.captioner_dir(24),
            "full size, random weights: ViT-B-32 (fp32) + ViT-base/GPT-2 captioner, 24-token greedy captions")


def stack_env(data_dir: Path, redis_url: str, prefix: str, flush_seconds: float,
              models: tuple[Path, Path]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("IMAGESEARCH_") and k not in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")}
    env.update({
        "IMAGESEARCH_DATA_DIR": str(data_dir),  # the metrics folder is derived from it: fresh per run
        "IMAGESEARCH_CLIP_MODEL_DIR": str(models[0]),
        "IMAGESEARCH_CAPTIONER_DIR": str(models[1]),
        "IMAGESEARCH_REDIS_URL": redis_url,
        "IMAGESEARCH_REDIS_NAMESPACE": prefix,
        "IMAGESEARCH_STORE": "embedded",
        "IMAGESEARCH_BLOB_BACKEND": "local",
        "IMAGESEARCH_DEVICE": "cpu",
        "IMAGESEARCH_BATCH_FLUSH_SECONDS": str(flush_seconds),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_WAIT_POLICY": "PASSIVE",  # spinning OpenMP waits starve the other processes on a small box
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(common.ROOT),
    })
    return env


# -- the load ------------------------------------------------------------------------------------

class Tracker:
    """Per upload: when its POST started and returned, and when a GET first showed it indexed/captioned."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[str, float] = {}
        self.post_s: dict[str, float] = {}
        self.taken_at: dict[str, float] = {}
        self.indexed: dict[str, float] = {}
        self.captioned: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.upload_errors: list[str] = []
        self.poll_cycles: list[float] = []

    def pending(self) -> list[str]:
        with self.lock:
            return [i for i in self.sent if i not in self.failed and (i not in self.indexed or i not in self.captioned)]


def upload(session: requests.Session, base: str, data: bytes, name: str, taken_at: float, tracker: Tracker) -> None:
    sent = time.time()
    try:
        response = session.post(base + "/v1/images", files={"file": (name, data, "image/jpeg")}, timeout=60)
        returned = time.time()
        response.raise_for_status()
        image_id = response.json()["id"]
    except Exception as exc:  # noqa: BLE001 - counted and reported
        with tracker.lock:
            tracker.upload_errors.append(f"{type(exc).__name__}: {exc}"[:200])
        return
    with tracker.lock:
        tracker.sent[image_id] = sent
        tracker.post_s[image_id] = returned - sent
        tracker.taken_at[image_id] = taken_at


def poll(base: str, tracker: Tracker, interval: float, stop: threading.Event) -> None:
    """GET every unsettled record once per ``interval``; a record's moments are those of the first
    response that showed them (the GET's return time: the state was there by then)."""
    session = requests.Session()
    while not stop.is_set():
        cycle = time.perf_counter()
        for image_id in tracker.pending():
            try:
                body = session.get(f"{base}/v1/images/{image_id}", timeout=30).json()
            except Exception:  # noqa: BLE001 - a missed poll only delays the observation
                continue
            seen = time.time()
            with tracker.lock:
                if body.get("status") == "failed":
                    tracker.failed[image_id] = str(body.get("error"))
                if body.get("status") == "indexed":
                    tracker.indexed.setdefault(image_id, seen)
                if body.get("caption_status") == "done":
                    tracker.indexed.setdefault(image_id, seen)
                    tracker.captioned.setdefault(image_id, seen)
                elif body.get("caption_status") == "failed":
                    tracker.failed[image_id] = str(body.get("error"))
        elapsed = time.perf_counter() - cycle
        with tracker.lock:
            tracker.poll_cycles.append(elapsed)
        stop.wait(max(0.0, interval - elapsed))


def drive(base: str, images: list[bytes], rate: float, duration: float, poll_interval: float,
          settle_timeout: float) -> tuple[Tracker, dict]:
    tracker = Tracker()
    stop = threading.Event()
    pollers = [threading.Thread(target=poll, args=(base, tracker, poll_interval, stop), daemon=True)]
    for thread in pollers:
        thread.start()
    count = int(rate * duration)
    sessions = threading.local()

    def one(i: int) -> None:
        if not hasattr(sessions, "s"):
            sessions.s = requests.Session()
        when = TAKEN_AT_BASE + 3600 * i
        upload(sessions.s, base, with_exif_date(images[i % len(images)], when), f"p{i}.jpg", when, tracker)

    lag: list[float] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        t0 = time.monotonic() + 0.2
        for i in range(count):
            due = t0 + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            lag.append(time.monotonic() - due)
            pool.submit(one, i)
        first_due = t0
    uploads_done = time.monotonic()
    deadline = uploads_done + settle_timeout
    while tracker.pending() and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for thread in pollers:
        thread.join(30)
    return tracker, {"uploads_span_s": round(uploads_done - first_due, 2),
                     "schedule_lag_max_ms": round(max(lag) * 1000, 1) if lag else None}


# -- figures ---------------------------------------------------------------------------------------

def spans(tracker: Tracker, moments: dict[str, float]) -> tuple[list[float], int]:
    """Seconds from POST to the moment, per accepted upload; and how many never got there."""
    values = [moments[i] - sent for i, sent in tracker.sent.items() if i in moments]
    return values, len(tracker.sent) - len(values)


def quantiles(values: list[float], missing: int) -> dict:
    """p50/p99 with the unsettled uploads counted as slower than everything (None when that decides)."""
    total = len(values) + missing
    if not total:
        return {"n": 0}
    ordered = sorted(values) + [float("inf")] * missing
    out = {"n": len(values), "unsettled": missing}
    for name, q in (("p50_s", 50), ("p90_s", 90), ("p99_s", 99), ("max_s", 100)):
        rank = q / 100 * (total - 1)
        low, high = ordered[int(rank)], ordered[min(int(rank) + 1, total - 1)]
        value = low + (high - low) * (rank - int(rank)) if high != float("inf") else high
        out[name] = round(value, 3) if value != float("inf") else None
    out["mean_s"] = round(sum(values) / len(values), 3) if values else None
    return out


def scrape(base: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(base + "/metrics", timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def histogram_figures(samples: dict, name: str) -> dict:
    """histogram_quantile's estimate (linear within a bucket) and the exact fractions at 1, 2, 3 s."""
    buckets = sorted((float(dict(labels)["le"]), value) for (n, labels), value in samples.items()
                     if n == name + "_bucket")
    count = samples.get((name + "_count", ()), 0)
    if not count:
        return {"n": 0}

    def quantile(q: float) -> float:
        target, lower, below = q * count, 0.0, 0.0
        for bound, cumulative in buckets:
            if cumulative >= target:
                if bound == float("inf"):
                    return lower
                return lower + (bound - lower) * (target - below) / max(cumulative - below, 1e-12)
            lower, below = bound, cumulative
        return lower

    at = {bound: cumulative for bound, cumulative in buckets}
    return {"n": int(count), "p50_s": round(quantile(0.5), 3), "p99_s": round(quantile(0.99), 3),
            "mean_s": round(samples[(name + "_sum", ())] / count, 3),
            **{f"le_{b:g}s": round(at[b] / count, 3) for b in (1.0, 2.0, 3.0) if b in at}}


def batch_sizes(samples: dict) -> dict:
    out = {}
    for stage in ("embed", "caption"):
        count = samples.get(("imagesearch_batch_size_count", (("stage", stage),)), 0)
        total = samples.get(("imagesearch_batch_size_sum", (("stage", stage),)), 0)
        seconds = samples.get(("imagesearch_stage_seconds_sum", (("stage", stage),)), 0)
        out[stage] = {"batches": int(count), "mean_images": round(total / count, 2) if count else None,
                      "mean_batch_s": round(seconds / count, 3) if count else None}
    return out


def run_once(flush: float, images: list[bytes], models: tuple[Path, Path], args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="bench-tts-"))
    prefix = f"bench-tts-{uuid.uuid4().hex[:8]}-"
    env = stack_env(workdir / "data", args.redis_url, prefix, flush, models)
    common.log(f"flush {flush} s: starting the API and the embed and caption workers (logs in {workdir}/logs)")
    try:
        with local_stack(env, workdir / "logs") as base:
            # Warm-up (not measured): models load on each worker's first batch.
            warm, _ = drive(base, images[:3], rate=3, duration=1, poll_interval=0.2, settle_timeout=120)
            if len(warm.captioned) != 3:
                raise RuntimeError(f"warm-up did not settle: {len(warm.captioned)}/3 captioned, {warm.failed}, "
                                   f"{warm.upload_errors}")
            before = scrape(base)
            load_before = os.getloadavg()[0]
            common.log(f"flush {flush} s: {args.rate}/s for {args.duration} s")
            tracker, timing = drive(base, images, args.rate, args.duration, args.poll_interval, args.settle_timeout)
            after = scrape(base)
            # The records carry the EXIF date the uploads had (taken_at read in the embed stage).
            session = requests.Session()
            sample_ids = list(tracker.sent)[:: max(1, len(tracker.sent) // 10)]
            taken_ok = all(session.get(f"{base}/v1/images/{i}", timeout=30).json().get("taken_at")
                           == tracker.taken_at[i] for i in sample_ids)
    finally:
        common.drop_redis_keys(args.redis_url, prefix)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    delta = {key: value - before.get(key, 0) for key, value in after.items()}
    indexed, missing_i = spans(tracker, tracker.indexed)
    captioned, missing_c = spans(tracker, tracker.captioned)
    client = {"indexed": quantiles(indexed, missing_i), "captioned": quantiles(captioned, missing_c)}
    accepted = len(tracker.sent)
    cycles = tracker.poll_cycles
    post_ms = [v * 1000 for v in tracker.post_s.values()]
    result = {
        "batch_flush_seconds": flush,
        "uploads": accepted,
        "upload_errors": len(tracker.upload_errors),
        "upload_error_sample": tracker.upload_errors[:3],
        "failed": len(tracker.failed),
        "rate_target_per_s": args.rate,
        "rate_achieved_per_s": round(accepted / timing["uploads_span_s"], 2) if timing["uploads_span_s"] else None,
        **timing,
        "upload_post_ms": {"p50": round(common.percentile(post_ms, 50), 1),
                           "p99": round(common.percentile(post_ms, 99), 1)} if post_ms else None,
        "poll_cycle_s": {"p50": round(common.percentile(cycles, 50), 3),
                         "max": round(max(cycles), 3)} if cycles else None,
        "client": client,
        "server": {stage: histogram_figures(delta, name) for stage, name in HISTOGRAMS.items()},
        "batches": batch_sizes(delta),
        "taken_at_round_trip": taken_ok,
        "loadavg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    result["checks"] = checks(client)
    common.log(f"flush {flush} s: indexed p50 {client['indexed'].get('p50_s')} p99 {client['indexed'].get('p99_s')}, "
               f"captioned p50 {client['captioned'].get('p50_s')} p99 {client['captioned'].get('p99_s')}")
    return result


def checks(client: dict) -> dict[str, bool]:
    figures = {"indexed_p50_s": client["indexed"].get("p50_s"), "indexed_p99_s": client["indexed"].get("p99_s"),
               "captioned_p50_s": client["captioned"].get("p50_s")}
    return {f"{name}<={bound}": figures[name] is not None and figures[name] <= bound for name, bound in TARGETS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=5.0, help="uploads per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of uploading, per flush value")
    parser.add_argument("--flush-seconds", default="0.5,0.1",
                        help="values of IMAGESEARCH_BATCH_FLUSH_SECONDS to run, comma-separated (0.5 is the default)")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="seconds between GETs of one record")
    parser.add_argument("--settle-timeout", type=float, default=180.0,
                        help="seconds to wait after the last upload for every record to settle")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--keep", action="store_true", help="keep the data folder and logs")
    parser.add_argument("--models", choices=("demo", "full"), default="demo",
                        help="demo: models/demo/; full: production-size models with random weights")
    parser.add_argument("--quick", action="store_true", help="15 s, the default flush only")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.flush_seconds = 15.0, "0.5"
    clip_dir, captioner_dir, label = model_dirs(args.models)
    images = photos(min(int(args.rate * args.duration), 300))
    runs = [run_once(float(flush), images, (clip_dir, captioner_dir), args) for flush in args.flush_seconds.split(",")]
    common.emit({
        "benchmark": "time_to_searchable",
        "stack": "imagesearch serve (1 gunicorn worker, 4 threads) + worker embed + worker caption "
                 "(concurrency 1 each), Redis broker, embedded store, local blobs (imagesearch.dev.procs.local_stack)",
        "models": label,
        "image": f"{SIZE[0]}x{SIZE[1]} JPEG q90 (bench/common.photo_jpeg) with EXIF DateTimeOriginal",
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "targets": {f"{k}<={v}": v for k, v in TARGETS.items()},
        "runs": runs,
        "machine": common.machine(),
    })


if __name__ == "__main__":
    main()
