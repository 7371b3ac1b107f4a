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
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from imagesearch.dev.client import ApiClient
from imagesearch.dev.world import query_language
from imagesearch.fusion import FusionConfig
from imagesearch.profiles import SearchProfile
from imagesearch.vocab import RankedList, SearchMode
from schemas.api import MAX_K

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
    # With a relevance calibration (over the top-10 hits of every query): expected calibration
    # error, and the precision and number of hits at relevance >= 0.5.
    ece: float | None = None
    precision_at_half: float | None = None
    hits_at_half: int | None = None


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
    # With --tune: the profile fitted, and every mode again over the held-out queries only.
    tuning: dict | None = None
    held_out: list[ModeReport] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


Relevances = dict[str, list[list[float | None]]]


def score(rankings: dict[str, list[list[str]]], latencies: dict[str, list[float]], labelled: LabelledSet,
          failed: int, models: dict[str, str], relevances: Relevances | None = None) -> Report:
    """Metrics from each mode's ranked ids, one list per query in ``labelled.queries`` order;
    ``relevances``: the hits' relevance, in the same shape, for the modes that have one."""
    every = list(range(len(labelled.queries)))
    modes, chance = _score_queries(rankings, latencies, labelled, every, relevances or {})
    languages = []
    for language in sorted({q.language for q in labelled.queries}):
        chosen = [i for i, q in enumerate(labelled.queries) if q.language == language]
        lang_modes, lang_chance = _score_queries(rankings, latencies, labelled, chosen, relevances or {})
        languages.append(LanguageReport(language, len(chosen), lang_modes, lang_chance))
    return Report(len(labelled.images), len(labelled.queries), failed, modes, chance, models, languages)


def _score_queries(rankings: dict[str, list[list[str]]], latencies: dict[str, list[float]],
                   labelled: LabelledSet, chosen: list[int],
                   relevances: Relevances) -> tuple[list[ModeReport], dict[int, float]]:
    from imagesearch.dev.tuning import expected_calibration_error, precision_at

    n = len(labelled.images)
    relevant = [labelled.queries[i].relevant for i in chosen]
    reports = []
    for mode, ranked_lists in rankings.items():
        pairs = list(zip((ranked_lists[i] for i in chosen), relevant))
        lat = sorted(latencies[mode][i] for i in chosen)
        report = ModeReport(
            mode=mode,
            recall={k: statistics.fmean(recall_at(r, rel, k) for r, rel in pairs) for k in CUTOFFS},
            mrr=statistics.fmean(reciprocal_rank(r, rel) for r, rel in pairs),
            ndcg10=statistics.fmean(ndcg_at(r, rel) for r, rel in pairs),
            latency_p50_ms=_percentile(lat, 50),
            latency_p95_ms=_percentile(lat, 95),
        )
        if mode in relevances:
            probabilities: list[float] = []
            labels: list[bool] = []
            for i, rel in zip(chosen, relevant):
                for image_id, p in zip(ranked_lists[i], relevances[mode][i]):
                    if p is not None:
                        probabilities.append(p)
                        labels.append(image_id in rel)
            if probabilities:
                report.ece = expected_calibration_error(probabilities, labels)
                report.precision_at_half, report.hits_at_half = precision_at(probabilities, labels)
        reports.append(report)
    chance = {k: statistics.fmean(chance_recall_at(n, len(rel), k) for rel in relevant) for k in CUTOFFS}
    return reports, chance


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


# -- running -----------------------------------------------------------------------------------


TUNED = "hybrid-tuned"  # the row of hybrid search with the profile applied


@dataclass
class _Pass:
    rankings: dict[str, list[list[str]]] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    relevances: Relevances = field(default_factory=dict)
    bodies: dict[str, list[dict]] = field(default_factory=dict)


def _query_all(client: ApiClient, labelled: LabelledSet, collection: str, modes: Iterable[str], *,
               k: int, explain: bool = False, label: Callable[[str], str] = str) -> _Pass:
    out = _Pass()
    for mode in modes:
        name = label(mode)
        out.rankings[name], out.latencies[name], out.bodies[name], relevances = [], [], [], []
        for query in labelled.queries:
            body, ms = client.search(text=query.text, mode=mode, k=k, collection=collection,
                                     explain=explain and mode == SearchMode.HYBRID)
            out.rankings[name].append([hit["external_id"] for hit in body["hits"]][: max(CUTOFFS)])
            out.latencies[name].append(ms)
            out.bodies[name].append(body)
            relevances.append([hit.get("relevance") for hit in body["hits"]][: max(CUTOFFS)])
        if any(p is not None for row in relevances for p in row):
            out.relevances[name] = relevances
    return out


def run(client: ApiClient, labelled: LabelledSet, collection: str, modes: Iterable[str] = MODES,
        progress: Callable[[int, int], None] | None = None, *, tune: bool = False,
        profile: SearchProfile | None = None, save_profile: Callable[[SearchProfile], None] | None = None,
        default_fusion: FusionConfig | None = None, tune_seed: int = 0, lists_out: Path | None = None) -> Report:
    """Upload every image into ``collection``, wait for the workers, then query each mode.

    With ``tune``: fit a profile on half the queries (``imagesearch.dev.tuning``), save it with
    ``save_profile``, and query again, so that the tuned hybrid and the calibrated relevance are
    measured through the API; ``lists_out`` gets every query's lists as the tuning saw them (JSON
    lines), to tune again offline. With ``profile``: measure once without it (the defaults), save
    it, and measure again with it.
    """
    modes = list(modes)
    ids = {client.upload(path.read_bytes(), path.name, external_id=image_id, collection=collection): image_id
           for image_id, path in labelled.images.items()}
    states = client.wait_settled(list(ids), progress=progress)
    failed = sum(s["status"] == "failed" for s in states.values())
    first = next(iter(states.values()))
    models = {"clip": first.get("image_model") or "", "captioner": first.get("caption_model") or ""}
    fusion_depth = (default_fusion or FusionConfig()).depth
    before = _query_all(client, labelled, collection, modes, k=min(MAX_K, fusion_depth) if tune else max(CUTOFFS),
                        explain=tune)
    tuning_info = None
    held = None
    if tune:

        profile, tuning_info, held = _fit(before, labelled, models, default_fusion or FusionConfig(), tune_seed,
                                          lists_out)
    if profile is None:
        return score(before.rankings, before.latencies, labelled, failed, models, before.relevances)
    if save_profile is None:
        raise ValueError("a profile needs save_profile to reach the API")
    save_profile(profile)
    time.sleep(_PROFILE_SETTLE_S)
    wanted = [m for m in modes if m != SearchMode.HYBRID] + ([SearchMode.HYBRID] if SearchMode.HYBRID in modes else [])
    after = _query_all(client, labelled, collection, wanted, k=max(CUTOFFS),
                       label=lambda m: TUNED if m == SearchMode.HYBRID else m)
    rankings = {m: after.rankings.get(m, before.rankings[m]) for m in modes}
    latencies = {m: after.latencies.get(m, before.latencies[m]) for m in modes}
    if SearchMode.HYBRID in modes:
        rankings[TUNED], latencies[TUNED] = after.rankings[TUNED], after.latencies[TUNED]
        tuned_flags = {b.get("fusion", {}).get("tuned") for b in after.bodies[TUNED]}
        if tuned_flags != {True}:
            raise RuntimeError("the API did not apply the saved profile (fusion.tuned was not true); are the API "
                               "and this command on the same Redis and namespace?")
    report = score(rankings, latencies, labelled, failed, models, after.relevances)
    if tune and held is not None:
        report.tuning = tuning_info
        report.held_out, _ = _score_queries(rankings, latencies, labelled, held, after.relevances)
    return report


# The API re-reads the profile at most once per IMAGESEARCH_PROFILE_REFRESH_S (1 s by default).
_PROFILE_SETTLE_S = 1.5


def _fit(before: _Pass, labelled: LabelledSet, models: dict[str, str], default: FusionConfig,
         seed: int, lists_out: Path | None) -> tuple[SearchProfile, dict, list[int]]:
    from imagesearch.dev import tuning

    relevant = [q.relevant for q in labelled.queries]
    data = []
    for i in range(len(labelled.queries)):
        lists: dict[RankedList, list[tuple[str, float]]] = {}
        for name in (RankedList.IMAGE, RankedList.CAPTION):
            lists[name] = [(h["external_id"], h["score"]) for h in before.bodies[str(name)][i]["hits"]]
        keyword = []
        for h in before.bodies[SearchMode.HYBRID][i]["hits"]:
            entry = ((h.get("explain") or {}).get("lists") or {}).get(RankedList.KEYWORD)
            if entry is not None:
                keyword.append((entry["rank"], h["external_id"], entry["score"]))
        lists[RankedList.KEYWORD] = [(eid, s) for _, eid, s in sorted(keyword)]
        data.append(tuning.QueryLists(lists))
    if lists_out is not None:
        with lists_out.open("w", encoding="utf-8") as handle:
            for query, item in zip(labelled.queries, data):
                handle.write(json.dumps({"query": query.text, "language": query.language,
                                         "relevant": sorted(query.relevant),
                                         "lists": {str(k): v for k, v in item.lists.items()}},
                                        ensure_ascii=False) + "\n")
    train, held = tuning.split(len(data), seed)
    result = tuning.tune_fusion(data, relevant, train, default)
    calibration = {}
    for mode in (SearchMode.IMAGE, SearchMode.CAPTION, SearchMode.HYBRID):
        scores: list[list[float]] = []
        labels: list[list[bool]] = []
        for i in train:
            hits = (tuning.ranked(data[i], result.fusion) if mode == SearchMode.HYBRID
                    else data[i].lists[RankedList(mode)])
            s, y = tuning.top_scores(hits, relevant[i])
            scores.append(s)
            labels.append(y)
        try:
            calibration[mode] = tuning.fit_calibration(scores, labels)
        except ValueError:
            pass  # every hit relevant, or none: nothing to calibrate on
    info = {"fusion": result.fusion.to_json(), "default_fusion": default.to_json(), "grid": result.grid,
            "train_queries": len(train), "held_out_queries": len(held), "train_mrr": round(result.train_mrr, 4),
            "train_recall1": round(result.train_recall1, 4), "default_train_mrr": round(result.default_train_mrr, 4),
            "kept_default": result.kept_default,
            "seed": seed}
    profile = SearchProfile(models["clip"], models["captioner"], result.fusion, calibration,
                            {"fitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                             "queries": len(train), "images": len(labelled.images), **info})
    return profile, info, held


def render_table(report: Report) -> str:
    """One row per mode over all queries, then one per mode and language when there are several;
    with --tune, the held-out queries again, and the fusion chosen."""
    header = (f"{'mode':<13} {'lang':<4} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6} {'nDCG@10':>8} "
              f"{'ECE':>6} {'P@.5':>6} {'p50 ms':>8} {'p95 ms':>8}")
    counts = ", ".join(f"{lang.language} {lang.queries}" for lang in report.by_language)
    lines = [f"{report.images} images, {report.queries} queries ({counts}), {report.failed_images} failed to index",
             header, "-" * len(header)]
    several = len(report.by_language) > 1
    groups: list[tuple[str, list[ModeReport], dict[int, float]]] = []
    if several or not report.by_language:
        groups.append(("all", report.modes, report.chance_recall))
    groups += [(lang.language, lang.modes, lang.chance_recall) for lang in report.by_language]
    for index in range(len(report.modes)):
        for language, modes, _ in groups:
            lines.append(_row(modes[index], language))
    c = report.chance_recall
    lines.append(f"{'chance':<13} {'all' if several else groups[0][0]:<4} {c[1]:>6.3f} {c[5]:>6.3f} {c[10]:>6.3f}")
    if report.held_out:
        tuning = report.tuning or {}
        lines += ["", f"held out ({tuning.get('held_out_queries', '?')} queries the tuning did not see):",
                  header, "-" * len(header)]
        lines += [_row(m, "all") for m in report.held_out]
        fusion = tuning.get("fusion", {})
        weights = ", ".join(f"{k} {v:g}" for k, v in fusion.get("weights", {}).items())
        verdict = ("kept the defaults: no fusion beat them by more than the noise of"
                   if tuning.get("kept_default") else "chosen from")
        lines.append(f"tuned fusion: {fusion.get('method')} ({weights}; depth {fusion.get('depth')}, "
                     f"rrf_k {fusion.get('rrf_k')}), {verdict} {tuning.get('grid')} fusions on "
                     f"{tuning.get('train_queries')} queries: MRR {tuning.get('train_mrr')} "
                     f"against {tuning.get('default_train_mrr')} for the defaults")
    if report.models:
        lines.append("models: " + ", ".join(f"{k}={v}" for k, v in report.models.items()))
    return "\n".join(lines)


def _row(m: ModeReport, language: str) -> str:
    ece = f"{m.ece:>6.3f}" if m.ece is not None else f"{'-':>6}"
    precision = (f"{m.precision_at_half:>6.3f}" if m.precision_at_half is not None
                 and not math.isnan(m.precision_at_half) else f"{'-':>6}")
    return (f"{m.mode:<13} {language:<4} {m.recall[1]:>6.3f} {m.recall[5]:>6.3f} {m.recall[10]:>6.3f} "
            f"{m.mrr:>6.3f} {m.ndcg10:>8.3f} {ece} {precision} {m.latency_p50_ms:>8.1f} {m.latency_p95_ms:>8.1f}")


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
