"""Shared helpers for the benchmarks: inputs, the ViT-B-32 folder, filled stores, machine facts,
statistics.

Everything is generated here (no downloads): photo-like JPEGs and ViT-B-32 with random weights
saved in open_clip's ``local-dir`` format, so it loads through ``imagesearch.models.clip.load_clip``
exactly like a real checkpoint. Generated inputs are cached under ``$IMAGESEARCH_BENCH_CACHE``
(default ``/tmp/imagesearch-bench``) so reruns compare the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

CACHE = Path(os.environ.get("IMAGESEARCH_BENCH_CACHE", "/tmp/imagesearch-bench"))

BIG = (4000, 3000)  # 12 MP
SMALL = (1152, 864)  # 1 MP


# -- inputs --------------------------------------------------------------------------------------

def photo_jpeg(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    """A photo-like JPEG: smooth colour gradients, soft shapes, fine texture and sensor noise.

    Real camera JPEGs at quality 90 run about 3-5 MB at 12 MP and 0.2-0.5 MB at 1 MP; the noise
    level is chosen to land there, since entropy decoding cost scales with the compressed size.
    """
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    # Smooth background: a coarse random colour field upsampled bicubically.
    coarse = rng.integers(30, 226, size=(4, 5, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(min(width, height) // 20, min(width, height) // 4))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            pts = [(int(x + r * np.cos(a)), int(y + r * np.sin(a))) for a in rng.uniform(0, 2 * np.pi, 3)]
            draw.polygon(pts, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=max(1, width // 1500)))
    pixels = np.asarray(image, dtype=np.int16)
    # Texture at a few pixels' scale (foliage, fabric) plus per-pixel sensor noise.
    tex = rng.normal(0, 9, size=(height // 4 + 1, width // 4 + 1, 1)).astype(np.float32)
    tex = np.repeat(np.repeat(tex, 4, axis=0), 4, axis=1)[:height, :width]
    noise = rng.normal(0, 4.5, size=(height, width, 3)).astype(np.float32)
    pixels = np.clip(pixels + tex + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def photo_set(count: int, sizes: tuple[tuple[int, int], ...] = (BIG, SMALL), seed: int = 0) -> list[bytes]:
    """``count`` JPEGs alternating over ``sizes`` (half 12 MP, half 1 MP by default), cached on disk."""
    folder = CACHE / "photos-v1"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        path = folder / f"{w}x{h}-{seed + i}.jpg"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(photo_jpeg(w, h, seed + i))
            tmp.replace(path)
        out.append(path.read_bytes())
    return out


# -- models --------------------------------------------------------------------------------------

def vit_b32_dir(seed: int = 0) -> Path:
    """ViT-B-32 (open_clip's config), random weights, in open_clip's local-dir format (cached)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    directory = CACHE / f"vit-b-32-random-{seed}"
    if (directory / "open_clip_model.safetensors").exists():
        return directory
    torch.manual_seed(seed)
    model_cfg = open_clip.get_model_config("ViT-B-32")
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    tmp = directory.with_name(directory.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)},
        "note": "ViT-B-32 architecture, RANDOM weights (benchmark only)",
    }
    (tmp / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "open_clip_model.safetensors"))
    if directory.exists():
        import shutil
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory


def load_vit_b32(precision: str = "fp32", device: str = "cpu", prepack_text: bool = True):
    from imagesearch.models.clip import ClipSpec, load_clip

    return load_clip(ClipSpec("ViT-B-32", "", vit_b32_dir(), device, precision, prepack_text))


# -- stores ---------------------------------------------------------------------------------------

def fill_vector_store(path: Path, n: int, identity: str, dim: int, seed: int = 0) -> float:
    """Fill a new embedded store with n records and random unit vectors for ``identity``, through the
    production calls (``put``, then ``set_image_vectors`` in batches of 1,000); returns seconds."""
    from imagesearch.blobs import original_key
    from imagesearch.records import ImageRecord
    from imagesearch.stores.base import ImageVectorUpdate
    from imagesearch.stores.embedded import EmbeddedStore

    started = time.perf_counter()
    store = EmbeddedStore(path)
    rng = np.random.default_rng(seed)
    step = 1000
    for start in range(0, n, step):
        ids = [f"img{i:07d}" for i in range(start, min(n, start + step))]
        for image_id in ids:
            store.put(ImageRecord(id=image_id, blob_key=original_key(image_id), content_hash="h" + image_id))
        vectors = rng.standard_normal((len(ids), dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.set_image_vectors([ImageVectorUpdate(id=i, content_hash="h" + i, vector=v, model=identity,
                                                   thumb_key=f"thumbs/{i}.jpg", width=640, height=480)
                                 for i, v in zip(ids, vectors)])
    store.close()
    return time.perf_counter() - started


def cached_vector_store(n: int, identity: str, dim: int) -> tuple[Path, float | None]:
    """The cached n-vector store for this model identity (built once, ~minutes for 100k) and the
    seconds its build took (None when it was already cached). Copy it before writing to it."""
    key = identity.replace(":", "_").replace("@", "_").replace("/", "_")
    cached = CACHE / f"vector-store-{n}-{dim}-{key}.sqlite3"
    if cached.exists():
        return cached, None
    log(f"building a {n}-vector store at {cached} (once) ...")
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.name + ".tmp")
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    build_s = fill_vector_store(tmp, n, identity, dim)
    with sqlite3.connect(tmp) as db:  # the WAL into the main file, so a plain copy carries everything
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode=DELETE")
    tmp.replace(cached)
    return cached, build_s


# -- cleanup ------------------------------------------------------------------------------------

def drop_redis_keys(url: str, prefix: str) -> None:
    """Delete one run's own Redis keys (its namespace); best effort, never fails the run."""
    try:
        from imagesearch.redis_state import Keyspace, connect

        client = connect(url)
        keys = [key for pattern in Keyspace(prefix).patterns for key in client.scan_iter(match=pattern)]
        if keys:
            client.delete(*keys)
    except Exception:  # noqa: BLE001 - cleanup must not hide the benchmark's result
        pass


# -- machine facts ---------------------------------------------------------------------------------

def machine() -> dict:
    import torch

    model = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    flags = ""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_tile" in flags,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


# -- statistics ----------------------------------------------------------------------------------

def median(values) -> float:
    return float(statistics.median(values))


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def hwm_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def emit(result: dict) -> None:
    """The one JSON line a benchmark prints (stdout); progress goes to stderr."""
    print(json.dumps(result, sort_keys=False), flush=True)


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)
