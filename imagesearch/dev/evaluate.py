"""``imagesearch eval``: measure each search scheme on a labelled set, through the running service.

The source article's advice is to compare the CLIP-image scheme and the caption scheme on your own
data before choosing; this indexes a labelled set through the real pipeline (HTTP upload, queue,
workers, store) and scores every query in each mode.

Definitions (binary relevance, several relevant images per query allowed):
- Recall@K: the fraction of queries with at least one relevant image in the top K (the usual
  text-to-image retrieval definition);
- MRR: mean of 1 / rank of the first relevant image within the top 10 (0 when none is there);
- nDCG@10: DCG of the top 10 over the DCG of an ideal ranking of min(|relevant|, 10) hits.
Chance is what a uniformly random ranking of the N indexed images scores in expectation.

Every query has a language ("en", "zh", ...): the ``language`` field of its row, else "zh" when it
holds CJK characters and "en" otherwise. The report gives each mode over all queries and per
language, so a multilingual model's weaker language cannot hide in the average.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from imagesearch.dev.client import ApiClient
from imagesearch.dev.world import query_language
from imagesearch.vocab import SearchMode

MODES = tuple(SearchMode)
CUTOFFS = (1, 5, 10)


@dataclass(frozen=True)
class LabelledQuery:
    text: str
    relevant: frozenset[str]
    language: str = "en"


@dataclass(frozen=True)
class LabelledSet:
    images: dict[str, Path]  # image id -> file
    queries: list[LabelledQuery]


def load_labelled_set(folder: Path) -> LabelledSet:
    """``images/`` plus ``queries.jsonl`` ({"query", "relevant": [ids], optional "language"}) or,
    failing that, a COCO/Flickr-style ``captions.jsonl`` ({"image": file, "caption", optional
    "language"}) where each caption's own image is the relevant one. Image ids are file names
    without extension."""
    folder = Path(folder)
    image_dir = folder / "images"
    images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.is_file()} if image_dir.is_dir() else {}
    if not images:
        raise ValueError(f"{image_dir} holds no images")
    queries: list[LabelledQuery] = []
    if (folder / "queries.jsonl").is_file():
        for row in _jsonl(folder / "queries.jsonl"):
            queries.append(LabelledQuery(row["query"], frozenset(str(i) for i in row["relevant"]),
                                         _language(row, row["query"])))
    elif (folder / "captions.jsonl").is_file():
        for row in _jsonl(folder / "captions.jsonl"):
            queries.append(LabelledQuery(row["caption"], frozenset({Path(row["image"]).stem}),
                                         _language(row, row["caption"])))
    else:
        raise ValueError(f"{folder} has neither queries.jsonl nor captions.jsonl")
    unknown = {i for q in queries for i in q.relevant} - set(images)
    if unknown:
        raise ValueError(f"relevant ids without an image: {sorted(unknown)[:5]}")
    return LabelledSet(images, queries)


def _language(row: dict, text: str) -> str:
    return str(row.get("language") or query_language(text))


def _jsonl(path: Path) -> Iterable[dict]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


# -- metrics ---------------------------------------------------------------------------------


def recall_at(ranked: list[str], relevant: frozenset[str], k: int) -> float:
    return float(any(i in relevant for i in ranked[:k]))


def reciprocal_rank(ranked: list[str], relevant: frozenset[str]) -> float:
    return next((1.0 / rank for rank, i in enumerate(ranked, start=1) if i in relevant), 0.0)


def ndcg_at(ranked: list[str], relevant: frozenset[str], k: int = 10) -> float:
    dcg = sum(1.0 / math.log2(rank + 1) for rank, i in enumerate(ranked[:k], start=1) if i in relevant)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return dcg / ideal if ideal else 0.0


def chance_recall_at(n: int, relevant: int, k: int) -> float:
    """P(at least one of ``relevant`` items in a random top ``k`` of ``n``)."""
    if relevant <= 0:
        return 0.0
    if k >= n:
        return 1.0
    return 1.0 - math.comb(n - relevant, k) / math.comb(n, k)


@dataclass
class ModeReport:
    mode: str
    recall: dict[int, float]
    mrr: float
    ndcg10: float
    latency_p50_ms: float
    latency_p95_ms: float


@dataclass
class LanguageReport:
    """The modes again, over the queries of one language only."""

    language: str
    queries: int
    modes: list[ModeReport]
    chance_recall: dict[int, float]


@dataclass
class Report:
    images: int
    queries: int
    failed_images: int
    modes: list[ModeReport]  # over all queries, whatever their language
    chance_recall: dict[int, float]
    models: dict[str, str] = field(default_factory=dict)
    by_language: list[LanguageReport] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def score(rankings: dict[str, list[list[str]]], latencies: dict[str, list[float]], labelled: LabelledSet,
          failed: int, models: dict[str, str]) -> Report:
    """Metrics from each mode's ranked ids, one list per query in ``labelled.queries`` order."""
    n = len(labelled.images)
    every = list(range(len(labelled.queries)))
    modes, chance = _score_queries(rankings, latencies, labelled, every)
    languages = []
    for language in sorted({q.language for q in labelled.queries}):
        chosen = [i for i, q in enumerate(labelled.queries) if q.language == language]
        lang_modes, lang_chance = _score_queries(rankings, latencies, labelled, chosen)
        languages.append(LanguageReport(language, len(chosen), lang_modes, lang_chance))
    return Report(n, len(labelled.queries), failed, modes, chance, models, languages)


def _score_queries(rankings: dict[str, list[list[str]]], latencies: dict[str, list[float]],
                   labelled: LabelledSet, chosen: list[int]) -> tuple[list[ModeReport], dict[int, float]]:
    n = len(labelled.images)
    relevant = [labelled.queries[i].relevant for i in chosen]
    reports = []
    for mode, ranked_lists in rankings.items():
        pairs = list(zip((ranked_lists[i] for i in chosen), relevant))
        lat = sorted(latencies[mode][i] for i in chosen)
        reports.append(ModeReport(
            mode=mode,
            recall={k: statistics.fmean(recall_at(r, rel, k) for r, rel in pairs) for k in CUTOFFS},
            mrr=statistics.fmean(reciprocal_rank(r, rel) for r, rel in pairs),
            ndcg10=statistics.fmean(ndcg_at(r, rel) for r, rel in pairs),
            latency_p50_ms=_percentile(lat, 50),
            latency_p95_ms=_percentile(lat, 95),
        ))
    chance = {k: statistics.fmean(chance_recall_at(n, len(rel), k) for rel in relevant) for k in CUTOFFS}
    return reports, chance


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


# -- running -----------------------------------------------------------------------------------


def run(client: ApiClient, labelled: LabelledSet, collection: str, modes: Iterable[str] = MODES,
        progress: Callable[[int, int], None] | None = None) -> Report:
    """Upload every image into ``collection``, wait for the workers, then query each mode."""
    ids = {client.upload(path.read_bytes(), path.name, external_id=image_id, collection=collection): image_id
           for image_id, path in labelled.images.items()}
    states = client.wait_settled(list(ids), progress=progress)
    failed = sum(s["status"] == "failed" for s in states.values())
    first = next(iter(states.values()))
    models = {"clip": first.get("image_model") or "", "captioner": first.get("caption_model") or ""}
    rankings: dict[str, list[list[str]]] = {}
    latencies: dict[str, list[float]] = {}
    for mode in modes:
        rankings[mode], latencies[mode] = [], []
        for query in labelled.queries:
            body, ms = client.search(text=query.text, mode=mode, k=max(CUTOFFS), collection=collection)
            rankings[mode].append([hit["external_id"] for hit in body["hits"]])
            latencies[mode].append(ms)
    return score(rankings, latencies, labelled, failed, models)


def render_table(report: Report) -> str:
    """One row per mode over all queries, then one per mode and language when there are several."""
    header = (f"{'mode':<8} {'lang':<4} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6} {'nDCG@10':>8} "
              f"{'p50 ms':>8} {'p95 ms':>8}")
    counts = ", ".join(f"{lang.language} {lang.queries}" for lang in report.by_language)
    lines = [f"{report.images} images, {report.queries} queries ({counts}), {report.failed_images} failed to index",
             header, "-" * len(header)]
    several = len(report.by_language) > 1
    groups: list[tuple[str, list[ModeReport], dict[int, float]]] = []
    if several or not report.by_language:
        groups.append(("all", report.modes, report.chance_recall))
    groups += [(lang.language, lang.modes, lang.chance_recall) for lang in report.by_language]
    for index, mode in enumerate(report.modes):
        for language, modes, _ in groups:
            m = modes[index]
            lines.append(f"{mode.mode:<8} {language:<4} {m.recall[1]:>6.3f} {m.recall[5]:>6.3f} {m.recall[10]:>6.3f} "
                         f"{m.mrr:>6.3f} {m.ndcg10:>8.3f} {m.latency_p50_ms:>8.1f} {m.latency_p95_ms:>8.1f}")
    c = report.chance_recall
    lines.append(f"{'chance':<8} {'all' if several else groups[0][0]:<4} {c[1]:>6.3f} {c[5]:>6.3f} {c[10]:>6.3f}")
    if report.models:
        lines.append("models: " + ", ".join(f"{k}={v}" for k, v in report.models.items()))
    return "\n".join(lines)


def write_chart(report: Report, path: Path) -> None:
    """One panel per query language (or one for all queries when they share a language)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(lang.language, lang.queries, lang.modes, lang.chance_recall) for lang in report.by_language]
    if not panels:
        panels = [("all", report.queries, report.modes, report.chance_recall)]
    names = ["R@1", "R@5", "R@10", "MRR", "nDCG@10"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels) + 1.6, 4.2), dpi=120, squeeze=False)
    width = 0.8 / (len(report.modes) + 1)
    for ax, (language, queries, modes, chance_recall) in zip(axes[0], panels):
        for i, m in enumerate(modes):
            values = [m.recall[1], m.recall[5], m.recall[10], m.mrr, m.ndcg10]
            bars = ax.bar([x + i * width for x in range(len(names))], values, width, label=m.mode)
            ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
        chance = [chance_recall[1], chance_recall[5], chance_recall[10]]
        ax.bar([x + len(modes) * width for x in range(3)], chance, width, label="chance", color="#bbbbbb")
        ax.set_xticks([x + width * len(modes) / 2 for x in range(len(names))], names)
        ax.set_ylim(0, 1.1)
        ax.set_title(f"{_LANGUAGE_NAMES.get(language, language)} queries ({queries})", fontsize=10)
    axes[0][0].set_ylabel("score")
    fig.suptitle(f"Search quality per scheme ({report.images} images, {report.queries} queries)")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# Panel titles in ASCII: matplotlib's default font has no CJK glyphs.
_LANGUAGE_NAMES = {"all": "All", "en": "English", "zh": "Chinese"}
