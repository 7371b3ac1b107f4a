"""GPU ingest: 1 MP JPEG bytes -> CLIP ViT-B-32 vectors -> EmbeddedStore, images/s per GPU.

    bash bench/gpu.sh                      # on the GPU machine (installs bench/wheels, runs this)
    python bench/gpu.py --smoke            # here, on CPU: tiny sizes, same code paths

Paths compared in one run, on the same bytes, each from encoded bytes in host memory to vectors
written into an EmbeddedStore (``set_image_vectors``, one write per batch, in a writer thread):

* ``nvjpeg``: ``torchvision.io.decode_jpeg(list_of_tensors, device="cuda")`` (nvJPEG; the batched
  list API uses the A100/H100 hardware JPEG decoder for baseline JPEGs), resize + centre crop +
  normalise on the GPU, CLIP under bf16 autocast. Decoding runs in a thread on its own CUDA stream
  so it overlaps with the model.
* ``pil``: a ``torch.utils.data.DataLoader`` with many worker processes, each running the project's
  own reduced-size decode (``imagesearch.imaging.decode``: PIL ``draft``), resize and crop to
  224x224 uint8; pinned batches are copied to the GPU, normalised there, encoded under bf16.
* ``nvjpeg_xN``: N processes sharing the GPU, each running the nvjpeg path on its share of the
  images with its own decoder and model copy (as N embed workers per GPU would); aggregate rate.
* ``model_only``: the bound: ready tensors already on the GPU, same batch size, the same encoder.
* ``nvjpeg_decode_only`` / ``pil_decode_only``: each decoder alone (no model, no store), to show
  which stage limits the end-to-end paths.

The model is loaded with the production loader (``imagesearch.models.clip.load_clip``, which on
CUDA holds bf16 weights and autocasts) from a ViT-B-32 folder with random weights written on the
spot; if the project's dependencies are missing it falls back to open_clip directly (said in the
JSON). The repo root is put on sys.path, so the package need not be installed.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # puts the repo root on sys.path
import numpy as np
import torch
import torch.nn.functional as F

MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP
STD = (0.26862954, 0.26130258, 0.27577711)


# -- inputs --------------------------------------------------------------------------------------

def make_jpegs(unique: int, width: int, height: int, processes: int) -> list[bytes]:
    import multiprocessing as mp

    jobs = [(width, height, seed) for seed in range(unique)]
    if processes <= 1:
        return [common.photo_jpeg(*j) for j in jobs]
    with mp.get_context("fork").Pool(processes) as pool:
        return pool.starmap(common.photo_jpeg, jobs, chunksize=4)


# -- model ---------------------------------------------------------------------------------------

def build_model_dir(directory: Path, name: str, smoke: bool) -> Path:
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    if smoke:  # tiny vision/text towers: same code paths, seconds on a CPU
        cfg = {"embed_dim": 64,
               "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
        model = open_clip.CLIP(**cfg)
    else:
        cfg = open_clip.get_model_config(name)
        model = open_clip.create_model(name, pretrained=None)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": cfg, "preprocess_cfg": {"mean": list(MEAN), "std": list(STD)}, "note": "random weights"}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(directory / "open_clip_model.safetensors"))
    return directory


class DirectEncoder:
    """Fallback when the project's dependencies are missing: the same steps as ClipEncoder.encode_pixels."""

    def __init__(self, directory: Path, device: torch.device, dtype: torch.dtype) -> None:
        import open_clip

        weights = "fp32"
        if device.type == "cuda":
            weights = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
        self.model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{directory}", device=device,
                                                                 precision=weights)
        self.model.eval()
        self.device, self.dtype, self.identity = device, dtype, f"clip:{directory.name}@direct"

    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        enabled = self.dtype != torch.float32
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled):
            features = self.model.encode_image(pixels.to(self.device, non_blocking=True))
            return F.normalize(features.float(), dim=-1).cpu().numpy()


def load_encoder(directory: Path, device: torch.device, precision: str):
    try:
        from imagesearch.models.clip import ClipSpec, load_clip

        encoder = load_clip(ClipSpec("ViT-B-32", "", directory, device.type, precision))
        return encoder, "imagesearch.models.clip.load_clip"
    except ImportError as exc:
        common.log(f"project loader unavailable ({exc}); using open_clip directly")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        return DirectEncoder(directory, device, dtype), f"open_clip direct (project import failed: {exc})"


# -- store ---------------------------------------------------------------------------------------

class Sink:
    """Writes each batch of vectors into an EmbeddedStore from a thread (SQLite releases the GIL)."""

    def __init__(self, path: Path, ids: list[str], identity: str) -> None:
        from imagesearch.records import ImageRecord
        from imagesearch.stores.base import ImageVectorUpdate
        from imagesearch.stores.embedded import EmbeddedStore

        self.update = ImageVectorUpdate
        self.store = EmbeddedStore(path)
        self.identity = identity
        db = self.store._conn()  # records exist before the timed run (the upload step made them)
        db.execute("BEGIN")
        for image_id in ids:
            record = ImageRecord(id=image_id, blob_key=f"originals/{image_id}", content_hash="h")
            db.execute("INSERT OR REPLACE INTO images (id, tenant, collection, status, source, blob_key, content_hash, "
                       "tags, caption_status, created_at, updated_at, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,0)",
                       (record.id, record.tenant, record.collection, "queued", "bench", record.blob_key,
                        record.content_hash, "[]", "pending", record.created_at, record.created_at))
        db.execute("COMMIT")
        self.queue: queue.Queue = queue.Queue(maxsize=8)
        self.written = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            ids, vectors = item
            try:
                done = self.store.set_image_vectors([
                    self.update(id=i, content_hash="h", vector=v, model=self.identity, thumb_key="", width=1152,
                                height=864) for i, v in zip(ids, vectors)])
                self.written += len(done)
            except BaseException as exc:  # noqa: BLE001 - re-raised in close()
                self.error = exc
                return

    def put(self, ids: list[str], vectors: np.ndarray) -> None:
        self.queue.put((ids, vectors))

    def close(self) -> int:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.written


# -- GPU preprocessing ---------------------------------------------------------------------------

def gpu_preprocess(images: list[torch.Tensor], size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 CHW images (any sizes) -> normalised (N, 3, size, size): shortest side to ``size``
    (antialiased bilinear), centre crop, like CLIP's preprocess. Same-sized images go in one call."""
    out = torch.empty((len(images), 3, size, size), device=images[0].device, dtype=torch.float32)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape[1:]), []).append(i)
    for (h, w), index in groups.items():
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        top, left = (nh - size) // 2, (nw - size) // 2
        for start in range(0, len(index), 64):  # bounded float copies of full-size images
            chunk = index[start:start + 64]
            batch = torch.stack([images[i] for i in chunk]).float()
            batch = F.interpolate(batch, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
            out[chunk] = batch[:, :, top:top + size, left:left + size]
    return out.div_(255.0).sub_(mean).div_(std)


# -- the three paths -------------------------------------------------------------------------------

def run_nvjpeg(jpegs, ids, encoder, sink, batch, device, size, decode_device) -> float:
    from torchvision.io import ImageReadMode, decode_jpeg

    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    ready: queue.Queue = queue.Queue(maxsize=3)
    decode_stream = torch.cuda.Stream() if device.type == "cuda" else None
    failure: list[BaseException] = []

    def decoder() -> None:
        try:
            ctx = torch.cuda.stream(decode_stream) if decode_stream is not None else _null()
            with ctx, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # frombuffer on read-only bytes: never written
                for start in range(0, len(jpegs), batch):
                    data = [torch.frombuffer(b, dtype=torch.uint8) for b in jpegs[start:start + batch]]
                    images = decode_jpeg(data, mode=ImageReadMode.RGB, device=decode_device)
                    images = [im.to(device, non_blocking=True) for im in images]
                    pixels = gpu_preprocess(images, size, mean, std)
                    event = None
                    if decode_stream is not None:
                        event = torch.cuda.Event()
                        event.record(decode_stream)
                    ready.put((start, pixels, event))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the consumer
            failure.append(exc)
        finally:
            ready.put(None)

    started = time.perf_counter()
    thread = threading.Thread(target=decoder, daemon=True)
    thread.start()
    while True:
        item = ready.get()
        if item is None:
            break
        start, pixels, event = item
        if event is not None:
            torch.cuda.current_stream().wait_event(event)
            pixels.record_stream(torch.cuda.current_stream())
        vectors = encoder.encode_pixels(pixels)
        sink.put(ids[start:start + len(vectors)], vectors)
    thread.join()
    if failure:
        raise failure[0]
    written = sink.close()
    seconds = time.perf_counter() - started
    assert written == len(jpegs), (written, len(jpegs))
    return seconds


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class JpegDataset(torch.utils.data.Dataset):
    def __init__(self, jpegs: list[bytes], size: int) -> None:
        self.jpegs, self.size = jpegs, size

    def __len__(self) -> int:
        return len(self.jpegs)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image

        from imagesearch import imaging  # the project's reduced-size decode (PIL draft)

        image = imaging.decode(self.jpegs[index], min_side=self.size, max_pixels=64_000_000)
        scale = self.size / min(image.size)
        w, h = max(self.size, round(image.width * scale)), max(self.size, round(image.height * scale))
        image = image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
        left, top = (w - self.size) // 2, (h - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        return torch.from_numpy(np.asarray(image).copy())  # HWC uint8


def run_pil(jpegs, ids, encoder, sink, batch, device, size, workers) -> float:
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    loader = torch.utils.data.DataLoader(JpegDataset(jpegs, size), batch_size=batch, num_workers=workers,
                                         pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
                                         persistent_workers=False, multiprocessing_context="fork" if workers else None)
    started = time.perf_counter()
    offset = 0
    for pixels in loader:
        pixels = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0).sub_(mean).div_(std)
        vectors = encoder.encode_pixels(pixels)
        sink.put(ids[offset:offset + len(vectors)], vectors)
        offset += len(vectors)
    written = sink.close()
    seconds = time.perf_counter() - started
    assert written == len(jpegs), (written, len(jpegs))
    return seconds


def run_nvjpeg_decode_only(jpegs, batch, device, size, decode_device) -> float:
    """nvJPEG decode + GPU resize/normalise alone (no model, no store): the decoder's ceiling."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(0, len(jpegs), batch):
            data = [torch.frombuffer(b, dtype=torch.uint8) for b in jpegs[start:start + batch]]
            images = [im.to(device) for im in decode_jpeg(data, mode=ImageReadMode.RGB, device=decode_device)]
            gpu_preprocess(images, size, mean, std)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def run_pil_decode_only(jpegs, batch, size, workers) -> float:
    """The DataLoader's PIL decode alone (no GPU work): the CPU decoders' ceiling."""
    loader = torch.utils.data.DataLoader(JpegDataset(jpegs, size), batch_size=batch, num_workers=workers,
                                         prefetch_factor=4 if workers else None,
                                         multiprocessing_context="fork" if workers else None)
    started = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - started


def run_model_only(count, encoder, batch, device, size) -> float:
    pixels = torch.randn(batch, 3, size, size, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(0, count, batch):
        encoder.encode_pixels(pixels)  # includes the copy of the vectors back to the host
    return time.perf_counter() - started


def _proc_worker(rank, model_dir, precision, device_name, jpegs, batch, size, tmpdir, barrier, results) -> None:
    """One of several processes sharing the GPU, each with its own nvJPEG decoder and model copy."""
    device = torch.device(device_name)
    encoder, _ = load_encoder(Path(model_dir), device, precision)
    ids = [f"p{rank}i{i:07d}" for i in range(len(jpegs))]
    decode_device = device if device.type == "cuda" else torch.device("cpu")
    warm = Sink(Path(tmpdir) / f"warm-{rank}.sqlite3", ids[:batch], encoder.identity)
    run_nvjpeg(jpegs[:batch], ids[:batch], encoder, warm, batch, device, size, decode_device)
    sink = Sink(Path(tmpdir) / f"proc-{rank}.sqlite3", ids, encoder.identity)
    barrier.wait(timeout=140)
    started = time.time()
    seconds = run_nvjpeg(jpegs, ids, encoder, sink, batch, device, size, decode_device)
    results.put((rank, started, started + seconds))


def run_nvjpeg_procs(procs, jpegs, model_dir, precision, device, batch, size, tmpdir, timeout=150.0) -> float:
    """``procs`` processes on one GPU, each ingesting its share; aggregate time first start -> last end.
    Bounded: a child that dies or a run past ``timeout`` seconds ends the attempt with an error."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    share = len(jpegs) // procs
    workers = [ctx.Process(target=_proc_worker, args=(r, str(model_dir), precision, device.type,
                                                      jpegs[r * share:(r + 1) * share], batch, size, str(tmpdir),
                                                      barrier, results), daemon=True) for r in range(procs)]
    for w in workers:
        w.start()
    spans, deadline = [], time.monotonic() + timeout
    try:
        while len(spans) < procs:
            try:
                spans.append(results.get(timeout=1.0))
            except queue.Empty:
                dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"multi-process run failed (exit codes {dead}, or past {timeout:.0f}s)") from None
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.terminate()
    return max(end for _, _, end in spans) - min(start for _, start, _ in spans)


# -- main ------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU-sized run: tiny model, small JPEGs, few images")
    parser.add_argument("--images", type=int, default=16384, help="images per path per repetition")
    parser.add_argument("--unique", type=int, default=256, help="distinct JPEGs generated (cycled)")
    parser.add_argument("--width", type=int, default=1152)
    parser.add_argument("--height", type=int, default=864)
    parser.add_argument("--batches", default="256,512,1024")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: cores - 2)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--paths", default="model_only,nvjpeg,pil,nvjpeg_decode_only,pil_decode_only")
    parser.add_argument("--procs", type=int, default=2,
                        help="also run the nvjpeg path as this many processes sharing the GPU (0: skip)")
    parser.add_argument("--out", default=None, help="also write the JSON line to this file")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        args.images, args.unique, args.width, args.height = 48, 8, 320, 240
        args.batches, args.reps = "16", 2
        args.workers = 2 if args.workers is None else args.workers
    workers = args.workers if args.workers is not None else max(1, (os.cpu_count() or 2) - 2)
    batches = [int(b) for b in args.batches.split(",")]
    paths = args.paths.split(",")
    if args.procs > 1 and "nvjpeg" in paths:
        paths.append(f"nvjpeg_x{args.procs}")
    decode_device = device if device.type == "cuda" else torch.device("cpu")
    size = 224

    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    t0 = time.perf_counter()
    unique = make_jpegs(args.unique, args.width, args.height, min(16, os.cpu_count() or 1))
    jpegs = [unique[i % len(unique)] for i in range(args.images)]
    mean_bytes = int(np.mean([len(b) for b in unique]))
    common.log(f"{len(unique)} JPEGs of {args.width}x{args.height} ({mean_bytes / 1e3:.0f} kB avg) "
        f"in {time.perf_counter() - t0:.1f}s")
    model_dir = build_model_dir(tmp / "vit-b-32-random", "ViT-B-32", args.smoke)
    encoder, loader = load_encoder(model_dir, device, args.precision)
    common.log(f"model loaded via {loader} on {device}")

    # Warm-up: kernels, cuDNN/cuBLAS heuristics, the nvJPEG decoder, the allocator.
    for b in batches:
        run_model_only(3 * b, encoder, b, device, size)
    results: dict[str, dict] = {}
    for rep in range(args.reps):
        for b in batches:
            for path in paths:
                ids = [f"r{rep}b{b}{path[:3]}{i:07d}" for i in range(args.images)]
                key = f"{path}:b{b}"
                try:
                    if path == "model_only":
                        seconds = run_model_only(args.images, encoder, b, device, size)
                    elif path == "nvjpeg_decode_only":
                        seconds = run_nvjpeg_decode_only(jpegs, b, device, size, decode_device)
                    elif path.startswith("nvjpeg_x") and b != batches[len(batches) // 2]:
                        continue  # one batch size (the middle one) keeps the run short
                    elif path.startswith("nvjpeg_x"):
                        seconds = run_nvjpeg_procs(args.procs, jpegs, model_dir, args.precision, device, b, size, tmp)
                    elif path == "pil_decode_only":
                        seconds = run_pil_decode_only(jpegs, b, size, workers)
                    else:
                        sink = Sink(tmp / f"store-{rep}-{b}-{path}.sqlite3", ids, encoder.identity)
                        if rep == 0 and path == "nvjpeg":  # first nvJPEG call creates the decoder
                            warm = Sink(tmp / "warm.sqlite3", ids[:b], encoder.identity)
                            run_nvjpeg(jpegs[:b], ids[:b], encoder, warm, b, device, size, decode_device)
                        if path == "nvjpeg":
                            seconds = run_nvjpeg(jpegs, ids, encoder, sink, b, device, size, decode_device)
                        else:
                            seconds = run_pil(jpegs, ids, encoder, sink, b, device, size, workers)
                    rate = args.images / seconds
                    results.setdefault(key, {"runs_img_s": []})["runs_img_s"].append(round(rate, 1))
                    common.log(f"rep {rep} {key}: {rate:,.0f} img/s")
                except Exception as exc:  # noqa: BLE001 - reported in the JSON, other paths go on
                    results.setdefault(key, {"runs_img_s": []})["error"] = f"{type(exc).__name__}: {exc}"[:500]
                    common.log(f"rep {rep} {key}: FAILED {exc}")
    for value in results.values():
        if value["runs_img_s"]:
            value["img_s"] = float(np.median(value["runs_img_s"]))
    best = {p: max((v.get("img_s", 0.0) for k, v in results.items() if k.startswith(p + ":")), default=0.0)
            for p in paths}
    ingest_paths = {p: v for p, v in best.items() if p in ("nvjpeg", "pil") or p.startswith("nvjpeg_x")}
    info = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (smoke)",
            "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_cores": os.cpu_count()}
    try:
        import torchvision
        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    result = {
        "benchmark": "gpu_ingest",
        "smoke": args.smoke,
        "images_per_run": args.images,
        "jpeg": f"{args.width}x{args.height} q90, {len(unique)} distinct, mean {mean_bytes} B",
        "model": "ViT-B-32 random weights" if not args.smoke else "tiny CLIP (smoke)",
        "model_loader": loader,
        "precision": args.precision,
        "dataloader_workers": workers,
        "nvjpeg_img_s": best.get("nvjpeg"),
        f"nvjpeg_x{args.procs}_procs_img_s": best.get(f"nvjpeg_x{args.procs}"),
        "pil_img_s": best.get("pil"),
        "model_only_img_s": best.get("model_only"),
        "nvjpeg_decode_only_img_s": best.get("nvjpeg_decode_only"),
        "pil_decode_only_img_s": best.get("pil_decode_only"),
        "best_end_to_end_img_s": max(ingest_paths.values(), default=0),
        "goal_3000_met": (max(ingest_paths.values(), default=0) >= 3000) if not args.smoke else None,
        "stretch_10000_met": (max((v for k, v in best.items() if k.startswith("nvjpeg")), default=0) >= 10000)
        if not args.smoke else None,
        "by_path_and_batch": results,
        "machine": info,
    }
    line = json.dumps(result)
    print(line, flush=True)
    if args.out:
        Path(args.out).write_text(line + "\n")


if __name__ == "__main__":
    main()
