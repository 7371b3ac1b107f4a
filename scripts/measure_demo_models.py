"""Measure the DEMO models on held-out procedural images, through the production model code.

    .venv/bin/python scripts/measure_demo_models.py                 # 500 images of world seed 2
    .venv/bin/python scripts/measure_demo_models.py --n 1000 --json out.json
    .venv/bin/python scripts/measure_demo_models.py --write-regression   # refresh the test vectors

No service, store or queue: the models load through ``get_clip``/``get_captioner`` and see images
the way the workers do (``imaging.decode(min_side=448)`` for CLIP; the 256-px JPEG thumbnail for
the captioner). Queries are the distinct canonical captions of the held-out images, in English and
in Chinese; an image is a hit when its canonical caption equals the query (several images can share
one), and each metric is reported next to its chance level. The caption scheme compares a query in
either language with CLIP text vectors of the generated captions, which are English.

"Short" queries name only count, colour and shape ("two red circles", "两个红色圆形"); an image is
a hit when the query is true of it (``world.matches``: one group of that kind, any size, anywhere).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from imagesearch import imaging  # noqa: E402
from imagesearch.config import ModelSettings, Settings  # noqa: E402
from imagesearch.dev import world  # noqa: E402

HELDOUT_SEED = 2  # training used world seed 1
DEMO_DIR = ROOT / "models" / "demo"
REGRESSION_FILE = ROOT / "tests" / "data" / "demo_clip_text_vectors.json"
REGRESSION_TEXTS = ("one small green star at the top", "two large red circles left of a small blue square",
                    "three yellow triangles", "顶部有一颗绿色小星星", "两个红色大圆形在一个蓝色小正方形的左边",
                    "三个黄色三角形")
MAX_PIXELS = 64_000_000


def demo_settings(root: Path = DEMO_DIR) -> Settings:
    return Settings(models=ModelSettings(clip_model_dir=root / "clip", captioner_dir=root / "captioner", device="cpu"))


def clip_input(sample: world.Sample) -> Image.Image:
    """What the embed worker hands to CLIP."""
    return imaging.decode(sample.image_jpeg, min_side=448, max_pixels=MAX_PIXELS)


def captioner_input(sample: world.Sample) -> Image.Image:
    """What the caption worker should hand to the captioner: the stored 256-px JPEG thumbnail."""
    thumb = imaging.thumbnail_jpeg(clip_input(sample), 256)
    return Image.open(io.BytesIO(thumb)).convert("RGB")


def _batched(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def recall_at(query_vectors: np.ndarray, item_vectors: np.ndarray, relevant: list[set[int]],
              ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Mean over queries of "at least one relevant item in the top k"."""
    scores = query_vectors @ item_vectors.T
    ranking = np.argsort(-scores, axis=1, kind="stable")
    return {k: float(np.mean([bool(relevant[q] & set(ranking[q, :k].tolist())) for q in range(len(relevant))]))
            for k in ks}


def chance_recall_at(n_items: int, relevant: list[set[int]], ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """The same metric for a random ranking: 1 - C(N-r, k) / C(N, k), averaged over queries."""
    return {k: float(np.mean([1 - math.comb(n_items - len(r), k) / math.comb(n_items, k) for r in relevant]))
            for k in ks}


def caption_space_size() -> int:
    """How many canonical captions the grammar can produce."""
    attributes = len(world.SIZES) * len(world.COLOURS) * len(world.SHAPES)
    single = len(world.COUNT_WORDS) * attributes * len(world.POSITIONS)
    double = len(world.TWO_GROUP_COUNTS) * len(world.RELATIONS) * attributes * (attributes - 1)
    return single + double


def caption_prior_chance() -> float:
    """P(a caption drawn from the world's own distribution equals the true one) = sum p(c)^2."""
    attributes = len(world.SIZES) * len(world.COLOURS) * len(world.SHAPES)
    single = len(world.COUNT_WORDS) * attributes * len(world.POSITIONS)
    double = len(world.TWO_GROUP_COUNTS) * len(world.RELATIONS) * attributes * (attributes - 1)
    return single * (0.5 / single) ** 2 + double * (0.5 / double) ** 2


def attribute_agreement(generated: list[str], samples: list[world.Sample]) -> dict[str, float]:
    """Per-attribute accuracy of generated captions whose structure matches the truth."""
    hits: dict[str, list[bool]] = {k: [] for k in ("count", "size", "colour", "shape", "position", "relation")}
    well_formed = 0
    for text, sample in zip(generated, samples):
        parsed = world.parse_caption(text)
        if parsed is None:
            continue
        well_formed += 1
        groups, position, relation = parsed
        if len(groups) != len(sample.groups):
            hits["position" if sample.position else "relation"].append(False)
            continue
        for got, want in zip(groups, sample.groups):
            for name in ("count", "size", "colour", "shape"):
                hits[name].append(getattr(got, name) == getattr(want, name))
        if sample.position:
            hits["position"].append(position == sample.position)
        else:
            hits["relation"].append(relation == sample.relation)
    out = {name: float(np.mean(values)) if values else 0.0 for name, values in hits.items()}
    out["well_formed"] = well_formed / max(1, len(generated))
    return out


def short_queries(samples: list[world.Sample], language: str) -> list[dict]:
    """Count, colour and shape of each one-group image ("two red circles"), with every image it is true of."""
    texts = sorted({(g.phrase(with_size=False) if language == "en" else g.phrase_zh(with_size=False))
                    for s in samples if len(s.groups) == 1 for g in s.groups})
    out = []
    for text in texts:
        description = world.describe(text)
        assert description is not None, text
        out.append({"query": text, "relevant": [s.id for s in samples if world.matches(description, s)]})
    return out


def _encode(clip, texts: list[str]) -> np.ndarray:
    return np.concatenate([clip.encode_texts(chunk) for chunk in _batched(texts, 256)])


def evaluate(samples: list[world.Sample], settings: Settings, batch: int = 64) -> dict:
    """All metrics for ``samples`` (text->image, captioner, caption scheme) with chance levels.

    English metrics keep their names (``text_to_image_r1``...); the Chinese ones end in ``_zh``.
    """
    from imagesearch.models import get_captioner, get_clip

    started = time.time()
    clip = get_clip(settings)
    captioner = get_captioner(settings)
    image_vectors = np.concatenate([clip.encode_images([clip_input(s) for s in chunk])
                                    for chunk in _batched(samples, batch)])
    generated: list[str] = []
    for chunk in _batched(samples, batch):
        generated += captioner.caption([captioner_input(s) for s in chunk])
    caption_vectors = _encode(clip, generated)
    index_of = {s.id: i for i, s in enumerate(samples)}

    out: dict = {"images": len(samples)}
    query_vectors: dict[str, np.ndarray] = {}
    for language in world.LANGUAGES:
        suffix = "" if language == "en" else "_zh"
        queries = world.queries(samples, language)
        relevant = [{index_of[i] for i in q["relevant"]} for q in queries]
        query_vectors[language] = _encode(clip, [q["query"] for q in queries])
        image_recall = recall_at(query_vectors[language], image_vectors, relevant)
        caption_recall = recall_at(query_vectors[language], caption_vectors, relevant)
        chance = chance_recall_at(len(samples), relevant)
        short = short_queries(samples, language)
        short_relevant = [{index_of[i] for i in q["relevant"]} for q in short]
        short_vectors = _encode(clip, [q["query"] for q in short])
        short_recall = recall_at(short_vectors, image_vectors, short_relevant)
        short_caption_recall = recall_at(short_vectors, caption_vectors, short_relevant)
        out |= {
            f"queries{suffix}": len(queries),
            f"text_to_image_r1{suffix}": image_recall[1],
            f"text_to_image_r5{suffix}": image_recall[5],
            f"caption_scheme_r1{suffix}": caption_recall[1],
            f"caption_scheme_r5{suffix}": caption_recall[5],
            f"chance_r1{suffix}": chance[1],
            f"chance_r5{suffix}": chance[5],
            f"short_queries{suffix}": len(short),
            f"short_text_to_image_r1{suffix}": short_recall[1],
            f"short_text_to_image_r5{suffix}": short_recall[5],
            f"short_caption_scheme_r1{suffix}": short_caption_recall[1],
            f"short_caption_scheme_r5{suffix}": short_caption_recall[5],
            f"short_chance_r1{suffix}": chance_recall_at(len(samples), short_relevant)[1],
        }
    # The two languages in one text space: does each Chinese canonical caption find its English
    # translation among all English canonical captions? (The queries of both languages are sorted
    # by their own text, so match them up through the images they name.)
    english_of = {tuple(q["relevant"]): i for i, q in enumerate(world.queries(samples, "en"))}
    translation = [english_of[tuple(q["relevant"])] for q in world.queries(samples, "zh")]
    nearest = np.argmax(query_vectors["zh"] @ query_vectors["en"].T, axis=1)
    out["zh_to_en_translation_r1"] = float(np.mean(nearest == np.array(translation)))
    exact = float(np.mean([g == s.caption for g, s in zip(generated, samples)]))
    return out | {
        "caption_exact": exact,
        "caption_exact_chance_uniform": 1 / caption_space_size(),
        "caption_exact_chance_prior": caption_prior_chance(),
        "caption_attributes": attribute_agreement(generated, samples),
        "examples": [{"id": s.id, "truth": s.caption, "truth_zh": s.caption_zh, "generated": g}
                     for s, g in zip(samples[:8], generated[:8])],
        "clip": clip.identity,
        "captioner": captioner.identity,
        "seconds": round(time.time() - started, 1),
    }


def write_regression(settings: Settings, path: Path = REGRESSION_FILE) -> None:
    """Expected text vectors for a few fixed texts, in the style of open_clip's regression tests."""
    from imagesearch.models import get_clip

    clip = get_clip(settings)
    vectors = clip.encode_texts(list(REGRESSION_TEXTS))
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"clip": clip.identity, "texts": list(REGRESSION_TEXTS),
               "vectors": [[round(float(v), 7) for v in row] for row in vectors]}
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=DEMO_DIR)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=HELDOUT_SEED)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--write-regression", action="store_true", help=f"rewrite {REGRESSION_FILE.name}")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    settings = demo_settings(args.models)
    if args.write_regression:
        write_regression(settings)
    results = evaluate(world.generate(args.n, args.seed), settings)
    text = json.dumps(results, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
