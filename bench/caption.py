"""Captioning throughput: batched generation vs one image at a time, and captions/s per worker.

    .venv/bin/python bench/caption.py            # 8 images, batch 8, 2 repetitions
    .venv/bin/python bench/caption.py --quick    # 4 images, batch 4, 1 repetition

The captioner is a transformers VisionEncoderDecoder with nlpconnect/vit-gpt2-image-captioning's
architecture (ViT-base/16 at 224 px encoder, GPT-2 small decoder with cross-attention, 50,257-token
vocabulary) and random weights, saved with save_pretrained and loaded with
``imagesearch.models.captioner.load_captioner``. The saved generation config sets
``min_new_tokens`` to the maximum so random weights never stop early: every caption is exactly
``max_length`` new tokens, like a real model's longest captions (a worst case per image).

Figures: ``batched_captions_s`` (Captioner.caption on ``--batch`` images per call),
``single_captions_s`` (one image per call), their ratio, and ``worker_captions_s``: the caption
worker's whole stage (``pipeline.caption_batch``: thumbnails from blob storage, generation, CLIP
ViT-B-32 text vectors of the captions, one store write), per worker process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import numpy as np
import torch

from imagesearch import imaging, pipeline
from imagesearch.blobs import LocalBlobStore, thumbnail_key
from imagesearch.config import ModelSettings, Settings, WorkerSettings
from imagesearch.dev.tiny_models import build_captioner
from imagesearch.models.captioner import CaptionerSpec, load_captioner
from imagesearch.records import ImageRecord
from imagesearch.stores.base import ImageVectorUpdate
from imagesearch.stores.embedded import EmbeddedStore

VOCAB = 50257  # GPT-2's, with the 4 special tokens of build_captioner


def captioner_dir(max_new_tokens: int, seed: int = 0) -> Path:
    """ViT-base + GPT-2 small VisionEncoderDecoder, random weights, fixed caption length (cached)."""
    directory = common.CACHE / f"vit-gpt2-random-v3-{seed}-len{max_new_tokens}"
    if (directory / "model.safetensors").exists():
        return directory
    tmp = directory.with_name(directory.name + ".tmp")
    # A word-level vocabulary of GPT-2's size (no network for GPT-2's BPE files); decoding cost
    # is negligible next to generation, and the LM head has GPT-2's real shape. The encoder is
    # ViT-base/16 at 224 px with the pooler, as vit-gpt2 has.
    build_captioner(tmp, [f"w{i}" for i in range(VOCAB - 4)], seed=seed, image_size=224, width=768, layers=12,
                    heads=12, intermediate=3072, positions=1024, min_new_tokens=max_new_tokens,
                    note="ViT-base + GPT-2 small architecture, RANDOM weights (benchmark only)")
    tmp.rename(directory)
    return directory


def thumbnails(count: int) -> list[bytes]:
    """The caption worker reads thumbnails (256 px JPEGs), made here from the 1 MP photos."""
    photos = common.photo_set(count, sizes=(common.SMALL,), seed=1000)
    return [imaging.thumbnail_jpeg(imaging.decode(p, min_side=256, max_pixels=64_000_000), 256) for p in photos]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 images, batch 4, 1 repetition")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="CAPTION_BATCH_SIZE (production default 8)")
    parser.add_argument("--max-length", type=int, default=24, help="CAPTION_MAX_LENGTH (production default 24)")
    parser.add_argument("--num-beams", type=int, default=1, help="CAPTION_NUM_BEAMS (production default 1)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.quick:
        args.images, args.batch, args.reps = 4, 4, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    directory = captioner_dir(args.max_length)
    captioner = load_captioner(CaptionerSpec("vit-gpt2-random", directory, "cpu", args.max_length, args.num_beams))
    clip = common.load_vit_b32("fp32")
    thumbs = thumbnails(args.images)
    # As the caption stage decodes them (pipeline.caption_batch: min side = THUMBNAIL_SIZE).
    images = [imaging.decode(t, min_side=256, max_pixels=64_000_000) for t in thumbs]

    # A store with indexed records whose thumbnails are in blob storage, as after the embed stage.
    tmp = Path(tempfile.mkdtemp(prefix="bench-caption-"))
    settings = Settings(_env_file=None, data_dir=tmp,
                        workers=WorkerSettings(_env_file=None, caption_batch_size=args.batch),
                        models=ModelSettings(_env_file=None, caption_max_length=args.max_length,
                                             caption_num_beams=args.num_beams))
    store = EmbeddedStore(tmp / "store.sqlite3")
    blobs = LocalBlobStore(tmp / "blobs")
    records = []
    for i, thumb in enumerate(thumbs):
        record = ImageRecord(id=f"cap{i:05d}", blob_key=f"originals/ca/cap{i:05d}", content_hash=f"h{i}")
        records.append(record)
        blobs.put(thumbnail_key(record.id), thumb, "image/jpeg")

    def reset() -> None:
        for record in records:
            store.put(record)
        store.set_image_vectors([ImageVectorUpdate(id=r.id, content_hash=r.content_hash,
                                                   vector=np.zeros(512, np.float32), model=clip.identity,
                                                   thumb_key=thumbnail_key(r.id), width=256, height=192)
                                 for r in records])

    def batched() -> float:
        started = time.perf_counter()
        for s in range(0, len(images), args.batch):
            out = captioner.caption(images[s:s + args.batch])
            assert len(out) == len(images[s:s + args.batch])
        return time.perf_counter() - started

    singles = images[:max(1, len(images) // 2)]  # one image per call is slow: half the images

    def single() -> float:
        started = time.perf_counter()
        for image in singles:
            captioner.caption([image])
        return time.perf_counter() - started

    def worker() -> float:
        reset()
        started = time.perf_counter()
        for s in range(0, len(records), args.batch):
            outcome = pipeline.caption_batch([r.id for r in records[s:s + args.batch]], settings=settings,
                                             store=store, blobs=blobs, captioner=captioner, clip=clip)
            assert len(outcome.done) == len(records[s:s + args.batch]), outcome
        return time.perf_counter() - started

    sample = captioner.caption(images[:1])[0]  # warm-up
    tokens = len(sample.split())
    common.log(f"warm-up caption has {tokens} words (forced length {args.max_length})")
    times: dict[str, list[float]] = {"batched": [], "single": [], "worker": []}
    for rep in range(args.reps):
        order = ["batched", "single", "worker"] if rep % 2 == 0 else ["worker", "single", "batched"]
        for name in order:
            seconds = {"batched": batched, "single": single, "worker": worker}[name]()
            times[name].append(seconds)
            count = len(singles) if name == "single" else len(images)
            common.log(f"rep {rep} {name}: {count / seconds:.2f} captions/s")
    counts = {"batched": len(images), "single": len(singles), "worker": len(images)}
    rate = {k: [counts[k] / s for s in v] for k, v in times.items()}
    result = {
        "benchmark": "caption",
        "model": "VisionEncoderDecoder: ViT-base/16 224px + GPT-2 small (cross-attention), random weights, fp32",
        "images": len(images),
        "single_images": len(singles),
        "batch": args.batch,
        "num_beams": args.num_beams,
        "max_length": args.max_length,
        "new_tokens_per_caption": tokens,
        "do_sample": False,
        "reps": args.reps,
        "batched_captions_s": round(common.median(rate["batched"]), 3),
        "single_captions_s": round(common.median(rate["single"]), 3),
        "batched_vs_single": round(common.median([b / s for b, s in zip(rate["batched"], rate["single"])]), 2),
        "worker_captions_s": round(common.median(rate["worker"]), 3),
        "seconds_per_caption_batched": round(1 / common.median(rate["batched"]), 3),
        "runs": {k: [round(x, 3) for x in v] for k, v in rate.items()},
        "machine": common.machine(),
    }
    common.emit(result)


if __name__ == "__main__":
    main()
