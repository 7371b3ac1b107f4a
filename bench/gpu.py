"""GPU workers, per GPU: the embed worker's stage (1 MP JPEG bytes -> stored vectors, images/s) and the
caption worker's stage (stored thumbnails -> stored captions and caption vectors, captions/s).

    bash bench/gpu.sh                      # on the GPU machine (installs bench/wheels, runs this)
    python bench/gpu.py --smoke            # here, on CPU: tiny models, small JPEGs, same code paths

Both stages run the workers' own functions, not a copy: ``pipeline.embed_batch`` and
``pipeline.caption_batch``, with the production stores (``EmbeddedStore``, ``LocalBlobStore``, in a
folder under /dev/shm when there is one) and models loaded by the production loaders
(``load_clip``, ``load_captioner``). Ids go in tasks of ``--task-size``, as a worker whose
``EMBED_FLUSH_EVERY`` / ``CAPTION_BATCH_SIZE`` is that receives them; the clock runs from the first
task's start to the last task's return (every vector, thumbnail and caption written).

* ``embed`` / ``tensor``: the GPU worker's default (``TENSOR_DECODE=auto`` on CUDA): originals read
  and their headers checked in ``--decode-threads`` threads, JPEGs decoded in batches by nvJPEG
  (``torchvision.io.decode_jpeg(list, device="cuda")``), EXIF orientation, resize, crop, normalise
  and thumbnails on the GPU, CLIP ViT-B-32 in fp16 at ``GPU_BATCH_SIZE``, each stage overlapped with
  the next; per ``--gpu-batches`` value.
* ``embed`` / ``pillow``: the same stage with ``TENSOR_DECODE=off`` (Pillow's reduced-size decodes in
  the decode threads), for comparison.
* ``embed`` / ``tensor_xN`` (``--procs N``): N processes on one GPU, each running the tensor path on
  its share with its own store, as N embed workers per GPU would; the aggregate rate.
* ``caption``: ``caption_batch`` over the thumbnails the embed run stored: a vit-gpt2-sized
  VisionEncoderDecoder (ViT-base/16 encoder, GPT-2 small decoder, random weights) in fp16, generate
  calls of ``CAPTION_GPU_BATCH_SIZE``, every caption exactly ``--caption-tokens`` new tokens
  (random weights never emit end-of-text: ``min_new_tokens`` is set to the maximum), then CLIP
  text vectors of the captions and one store write per call; per ``--caption-batches`` value.

Models have random weights, made here (no network): throughput does not depend on the values.
Each run prints one JSON line on stdout; the last line sums up (``embed_img_s_per_gpu``,
``caption_captions_s_per_gpu``, the goals). ``--out`` also writes all lines to a file.
``--list-wheels FILE`` writes the distributions a run imported that a machine with torch and
torchvision alone lacks, pinned (``bench/gpu.sh --fetch-wheels`` downloads them).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # puts the repo root on sys.path
import numpy as np
import torch

from imagesearch import pipeline
from imagesearch.blobs import LocalBlobStore, original_key
from imagesearch.config import IngestSettings, ModelSettings, Settings, WorkerSettings
from imagesearch.models.captioner import Captioner, CaptionerSpec, load_captioner
from imagesearch.models.clip import ClipEncoder, ClipSpec, load_clip
from imagesearch.records import ImageRecord
from imagesearch.stores.embedded import EmbeddedStore

GOALS = {"embed_img_s": 5000, "embed_stretch_img_s": 10000, "caption_captions_s": 1000}  # issue 16, per GPU
GPT2_VOCAB = 50257
# What a machine with a CUDA torch and torchvision already has (their own dependencies included):
# --list-wheels leaves these out. Optional imports of transformers/open_clip are left out too.
PROVIDED = {"torch", "torchvision", "triton", "numpy", "pillow", "sympy", "mpmath", "networkx", "jinja2",
            "markupsafe", "fsspec", "filelock", "setuptools", "pip", "imagesearch"}
OPTIONAL = {"scipy", "timm", "sentencepiece", "scikit-image", "psutil"}


# -- inputs and models -----------------------------------------------------------------------------

def make_jpegs(unique: int, width: int, height: int, processes: int) -> list[bytes]:
    import multiprocessing as mp

    jobs = [(width, height, seed) for seed in range(unique)]
    if processes <= 1:
        return [common.photo_jpeg(*job) for job in jobs]
    with mp.get_context("fork").Pool(processes) as pool:
        return pool.starmap(common.photo_jpeg, jobs, chunksize=4)


def clip_dir(smoke: bool) -> Path:
    if smoke:
        from imagesearch.dev.tiny_models import build_tiny_clip

        return build_tiny_clip(common.CACHE / "gpu-smoke-clip")
    return common.vit_b32_dir()


def captioner_dir(smoke: bool, tokens: int) -> Path:
    """vit-gpt2's architecture with random weights (the tiny captioner for --smoke), fixed length."""
    from imagesearch.dev.tiny_models import build_captioner

    name = f"gpu-smoke-captioner-len{tokens}" if smoke else f"vit-gpt2-random-gpu-len{tokens}"
    directory = common.CACHE / name
    if (directory / "model.safetensors").exists():
        return directory
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if smoke:
        build_captioner(tmp, [f"w{i}" for i in range(60)], min_new_tokens=tokens)
    else:
        build_captioner(tmp, [f"w{i}" for i in range(GPT2_VOCAB - 4)], image_size=224, width=768, layers=12,
                        heads=12, intermediate=3072, positions=1024, min_new_tokens=tokens,
                        note="ViT-base + GPT-2 small architecture, RANDOM weights (benchmark only)")
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return directory


def worker_settings(data_dir: Path, args: argparse.Namespace, **workers: object) -> Settings:
    """The settings a GPU worker would run with (no .env, no environment beyond the defaults)."""
    fields = {"decode_threads": args.decode_threads, "embed_batch_size": args.cpu_batch,
              "embed_flush_every": args.task_size, "caption_batch_size": min(args.task_size, 1024)} | workers
    return Settings(_env_file=None, data_dir=data_dir,
                    workers=WorkerSettings(_env_file=None, **fields),
                    models=ModelSettings(_env_file=None, device=args.device, precision=args.precision,
                                         caption_max_length=args.caption_tokens),
                    ingest=IngestSettings(_env_file=None))


def scratch_root() -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="imagesearch-gpu-", dir=base))


def seeded_store(folder: Path, jpegs: list[bytes], count: int, prefix: str) -> tuple[EmbeddedStore, LocalBlobStore,
                                                                                      list[str]]:
    """``count`` queued records over the distinct originals (stored once each), as uploads leave them."""
    folder.mkdir(parents=True, exist_ok=True)
    store, blobs = EmbeddedStore(folder / "store.sqlite3"), LocalBlobStore(folder / "blobs")
    for j, data in enumerate(jpegs):
        blobs.put(original_key(f"u{j}"), data)
    ids = [f"{prefix}{i:07d}" for i in range(count)]
    for i, image_id in enumerate(ids):
        j = i % len(jpegs)
        store.put(ImageRecord(id=image_id, blob_key=original_key(f"u{j}"), content_hash=f"h{j}", source="bench"))
    return store, blobs, ids


# -- the two stages ----------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_tasks(name: str, stage: Callable[[list[str]], pipeline.BatchOutcome], ids: list[str], task_size: int,
               device: torch.device) -> float:
    """Seconds for ``stage`` over ``ids``, in tasks of ``task_size``, as a worker receives them; every id
    must be done (a failed or retried id would make the rate meaningless)."""
    _sync(device)
    started = time.perf_counter()
    done = 0
    for start in range(0, len(ids), task_size):
        outcome = stage(ids[start:start + task_size])
        if outcome.failed or outcome.retry:
            raise RuntimeError(f"{name}: failed {dict(list(outcome.failed.items())[:3])} "
                               f"retry {dict(list(outcome.retry.items())[:3])}")
        done += len(outcome.done)
    _sync(device)
    seconds = time.perf_counter() - started
    if done != len(ids):
        raise RuntimeError(f"{name}: {done} of {len(ids)} done")
    return seconds


def run_embed(ids: list[str], settings: Settings, store: EmbeddedStore, blobs: LocalBlobStore, clip: ClipEncoder,
              task_size: int) -> float:
    """Seconds for the embed stage over ``ids``, in tasks of ``task_size``; every id must be done."""
    stage = partial(pipeline.embed_batch, settings=settings, store=store, blobs=blobs, clip=clip)
    return _run_tasks("embed", stage, ids, task_size, clip.device)


def run_caption(ids: list[str], settings: Settings, store: EmbeddedStore, blobs: LocalBlobStore,
                captioner: Captioner, clip: ClipEncoder, task_size: int) -> float:
    """Seconds for the caption stage over ``ids``, in tasks of ``task_size``; every id must be done."""
    stage = partial(pipeline.caption_batch, settings=settings, store=store, blobs=blobs, captioner=captioner,
                    clip=clip)
    return _run_tasks("caption", stage, ids, task_size, clip.device)


def _proc_worker(rank: int, args: argparse.Namespace, jpegs: list[bytes], count: int, root: str, batch: int,
                 barrier, results) -> None:
    """One of several embed workers sharing the GPU: its own model copy, store and decoder."""
    try:
        settings = worker_settings(Path(root) / f"proc-{rank}", args, gpu_batch_size=batch)
        clip = load_clip(ClipSpec("ViT-B-32", "", clip_dir(args.smoke), args.device, args.precision))
        store, blobs, ids = seeded_store(Path(root) / f"proc-{rank}", jpegs, count + batch, f"p{rank}-")
        run_embed(ids[:batch], settings, store, blobs, clip, args.task_size)  # warm-up: kernels, nvJPEG
        barrier.wait(timeout=300)
        started = time.time()
        seconds = run_embed(ids[batch:], settings, store, blobs, clip, args.task_size)
        results.put((rank, started, started + seconds, None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put((rank, 0.0, 0.0, f"{type(exc).__name__}: {exc}"[:300]))


def run_embed_procs(procs: int, args: argparse.Namespace, jpegs: list[bytes], count: int, root: Path, batch: int,
                    timeout: float = 400.0) -> float:
    """``procs`` processes on one GPU, ``count // procs`` images each; first start to last end."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    share = count // procs
    workers = [ctx.Process(target=_proc_worker, args=(r, args, jpegs, share, str(root), batch, barrier, results),
                           daemon=True) for r in range(procs)]
    for worker in workers:
        worker.start()
    spans, deadline = [], time.monotonic() + timeout
    try:
        while len(spans) < procs:
            try:
                rank, start, end, error = results.get(timeout=1.0)
            except queue.Empty:
                dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    why = f"exit codes {dead}" if dead else f"past {timeout:.0f}s"
                    raise RuntimeError(f"multi-process run failed ({why})") from None
                continue
            if error:
                raise RuntimeError(f"process {rank}: {error}")
            spans.append((start, end))
    finally:
        barrier.abort()
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.terminate()
    return share * procs / (max(end for _, end in spans) - min(start for start, _ in spans))


# -- main ------------------------------------------------------------------------------------------

def emit(line: dict, lines: list[dict]) -> None:
    lines.append(line)
    print(json.dumps(line), flush=True)


def third_party_distributions() -> list[str]:
    """``name==version`` of every distribution this process imported, less what torch machines have."""
    import importlib.metadata as metadata

    owners = metadata.packages_distributions()
    names = {dist for module in list(sys.modules) for dist in owners.get(module.split(".")[0], [])}
    pinned = set()
    for name in names:
        key = name.lower().replace("_", "-")
        if key in PROVIDED or key in OPTIONAL or key.startswith(("nvidia-", "cuda-")):
            continue
        pinned.add(f"{name}=={metadata.version(name)}")
    return sorted(pinned, key=str.lower)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU-sized run: tiny models, small JPEGs, few images")
    parser.add_argument("--images", type=int, default=16384, help="images per embed run")
    parser.add_argument("--captions", type=int, default=3072,
                        help="captions per caption run (all runs caption the first embed run's images)")
    parser.add_argument("--unique", type=int, default=256, help="distinct JPEGs generated (cycled)")
    parser.add_argument("--width", type=int, default=1152)
    parser.add_argument("--height", type=int, default=864)
    parser.add_argument("--gpu-batches", default="256,512", help="IMAGESEARCH_GPU_BATCH_SIZE values")
    parser.add_argument("--caption-batches", default="256,512", help="IMAGESEARCH_CAPTION_GPU_BATCH_SIZE values")
    parser.add_argument("--caption-tokens", type=int, default=16, help="new tokens per caption (fixed)")
    parser.add_argument("--task-size", type=int, default=2048, help="ids per task (EMBED_FLUSH_EVERY)")
    parser.add_argument("--decode-threads", type=int, default=None, help="DECODE_THREADS (default: cores/2, <= 16)")
    parser.add_argument("--cpu-batch", type=int, default=16, help="EMBED_BATCH_SIZE (the model batch on CPU)")
    parser.add_argument("--paths", default="tensor,pillow", help="embed paths: tensor, pillow")
    parser.add_argument("--procs", type=int, default=2, help="also run the tensor path as this many processes (0: no)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="IMAGESEARCH_PRECISION (auto: fp16 on CUDA)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="skip runs that would start after this")
    parser.add_argument("--out", default=None, help="also write the JSON lines to this file")
    parser.add_argument("--list-wheels", metavar="FILE", default=None,
                        help="after the run, write the pinned distributions it imported (less torch's) to FILE")
    args = parser.parse_args()
    args.device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if args.smoke:
        args.images, args.captions, args.unique, args.width, args.height = 48, 16, 8, 320, 240
        args.gpu_batches, args.caption_batches, args.caption_tokens = "8", "8", 4
        args.task_size, args.cpu_batch, args.reps, args.procs = 16, 8, 1, 0
        args.decode_threads = 2 if args.decode_threads is None else args.decode_threads
    if args.decode_threads is None:
        args.decode_threads = max(2, min(16, (os.cpu_count() or 4) // 2))
    return args


def main() -> None:
    args = parse_args()
    clock = time.monotonic()
    device = torch.device(args.device)
    # On CPU (--smoke) the GPU path is forced on: the same functions, with device="cpu".
    tensor_mode = "on" if device.type == "cpu" else "auto"
    lines: list[dict] = []
    root = scratch_root()
    try:
        started = time.perf_counter()
        jpegs = make_jpegs(args.unique, args.width, args.height, min(16, os.cpu_count() or 1))
        common.log(f"{len(jpegs)} JPEGs of {args.width}x{args.height} "
                   f"({np.mean([len(j) for j in jpegs]) / 1e3:.0f} kB avg) in {time.perf_counter() - started:.1f}s")
        clip = load_clip(ClipSpec("ViT-B-32", "", clip_dir(args.smoke), args.device, args.precision))
        common.log(f"CLIP {clip.identity} on {clip.device} in {clip.dtype}; tensor preprocessing: "
                   f"{clip.preprocesses_tensors}")
        gpu_batches = [int(b) for b in args.gpu_batches.split(",")]
        paths = args.paths.split(",")
        embed_best: dict[str, float] = {}
        captioning: tuple[EmbeddedStore, LocalBlobStore, list[str]] | None = None
        runs = 0
        for path in paths:
            for batch in gpu_batches if path == "tensor" else gpu_batches[:1]:
                mode = tensor_mode if path == "tensor" else "off"
                rates = []
                for rep in range(args.reps if path == "tensor" else 1):
                    if time.monotonic() - clock > args.budget_s:
                        common.log(f"skipped embed {path} b{batch} rep {rep}: past the time budget")
                        continue
                    folder = root / f"embed-{runs}"
                    runs += 1
                    settings = worker_settings(folder, args, tensor_decode=mode, gpu_batch_size=batch)
                    store, blobs, ids = seeded_store(folder, jpegs, args.images + batch, f"{path[0]}{rep}-")
                    run_embed(ids[:batch], settings, store, blobs, clip, args.task_size)  # warm-up
                    seconds = run_embed(ids[batch:], settings, store, blobs, clip, args.task_size)
                    rates.append(args.images / seconds)
                    common.log(f"embed {path} gpu_batch {batch} rep {rep}: {rates[-1]:,.0f} img/s")
                    if path == "tensor" and captioning is None:
                        captioning = (store, blobs, ids[batch:])  # its thumbnails feed the caption runs
                    else:
                        store.close()
                if rates:
                    rate = float(np.median(rates))
                    embed_best[path] = max(embed_best.get(path, 0.0), rate)
                    emit({"benchmark": "gpu_worker", "stage": "embed", "path": path, "gpu_batch_size": batch,
                          "task_size": args.task_size, "decode_threads": args.decode_threads, "procs": 1,
                          "images": args.images, "img_s": round(rate, 1), "runs_img_s": [round(r, 1) for r in rates]},
                         lines)
        if args.procs > 1 and "tensor" in paths:
            batch = gpu_batches[0]
            if time.monotonic() - clock <= args.budget_s:
                try:
                    rate = run_embed_procs(args.procs, args, jpegs, args.images, root / "procs", batch)
                    embed_best[f"tensor_x{args.procs}"] = rate
                    emit({"benchmark": "gpu_worker", "stage": "embed", "path": f"tensor_x{args.procs}",
                          "gpu_batch_size": batch, "task_size": args.task_size, "decode_threads": args.decode_threads,
                          "procs": args.procs, "images": args.images, "img_s": round(rate, 1)}, lines)
                except Exception as exc:  # noqa: BLE001 - reported, the caption runs go on
                    emit({"benchmark": "gpu_worker", "stage": "embed", "path": f"tensor_x{args.procs}",
                          "error": f"{type(exc).__name__}: {exc}"[:500]}, lines)

        caption_best = 0.0
        if captioning is not None:
            store, blobs, ids = captioning
            spec = CaptionerSpec(name="bench", directory=captioner_dir(args.smoke, args.caption_tokens),
                                 device=args.device, max_length=args.caption_tokens, num_beams=1,
                                 precision=args.precision)
            captioner = load_captioner(spec)
            common.log(f"captioner on {captioner.device} in {captioner.model.dtype}")
            caption_batches = [int(b) for b in args.caption_batches.split(",")]
            offset = 0
            for batch in caption_batches:
                rates = []
                settings = worker_settings(root / "caption", args, caption_gpu_batch_size=batch)
                for rep in range(args.reps):
                    warm = batch if rep == 0 else 0  # one warm-up call per batch size (kernels, allocator)
                    chunk = ids[offset:offset + warm + args.captions]
                    if time.monotonic() - clock > args.budget_s or len(chunk) < warm + args.captions:
                        common.log(f"skipped caption b{batch} rep {rep}: past the time budget or out of images")
                        continue
                    offset += len(chunk)
                    if warm:
                        run_caption(chunk[:warm], settings, store, blobs, captioner, clip, args.task_size)
                    seconds = run_caption(chunk[warm:], settings, store, blobs, captioner, clip, args.task_size)
                    rates.append(args.captions / seconds)
                    common.log(f"caption gpu_batch {batch} rep {rep}: {rates[-1]:,.0f} captions/s")
                if rates:
                    rate = float(np.median(rates))
                    caption_best = max(caption_best, rate)
                    emit({"benchmark": "gpu_worker", "stage": "caption", "caption_gpu_batch_size": batch,
                          "caption_tokens": args.caption_tokens, "task_size": args.task_size, "captions": args.captions,
                          "captions_s": round(rate, 1), "runs_captions_s": [round(r, 1) for r in rates]}, lines)
            sample = store.get_many(ids[:1])[ids[0]]
            common.log(f"a stored caption: {sample.caption!r}")
            store.close()

        tensor_best = max((v for k, v in embed_best.items() if k.startswith("tensor")), default=0.0)
        import torchvision

        summary = {
            "benchmark": "gpu_workers", "smoke": args.smoke,
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (GPU path forced on)",
            "clip": f"ViT-B-32, random weights, {clip.dtype}" if not args.smoke else "tiny CLIP (smoke)",
            "jpeg": f"{args.width}x{args.height} q90, {len(jpegs)} distinct",
            "embed_img_s_per_gpu": round(tensor_best, 1),
            "embed_by_path_img_s": {k: round(v, 1) for k, v in embed_best.items()},
            "caption_captions_s_per_gpu": round(caption_best, 1),
            "goal_embed_5000_met": tensor_best >= GOALS["embed_img_s"] if not args.smoke else None,
            "stretch_embed_10000_met": tensor_best >= GOALS["embed_stretch_img_s"] if not args.smoke else None,
            "goal_caption_1000_met": caption_best >= GOALS["caption_captions_s"] if not args.smoke else None,
            "seconds": round(time.monotonic() - clock, 1),
            "machine": {"torch": torch.__version__, "torchvision": torchvision.__version__, "cuda": torch.version.cuda,
                        "cpu_cores": os.cpu_count(), "python": sys.version.split()[0]},
        }
        emit(summary, lines)
        if args.out:
            Path(args.out).write_text("".join(json.dumps(line) + "\n" for line in lines))
        if args.list_wheels:
            Path(args.list_wheels).write_text("".join(f"{r}\n" for r in third_party_distributions()))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
