"""``imagesearch demo``: the whole system on one machine, end to end, in one command.

Starts the API and both workers as the Procfile would, uploads sample images from the
procedural world over HTTP, waits until they are indexed and captioned, and prints what each
search mode returns: every hit marked ✓ or ✗ by whether the query is true of what the image really
shows (``world.describe`` + ``world.matches``: the structure, in either language, never a string
comparison), and recall per mode at the end.

Without ``--query`` the queries are drawn from the indexed images themselves (English and Chinese,
full captions and short ones), so each has right answers to find. A query of your own that no
indexed image fits gets a few fitting images from further along the same world, so it has some too.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagesearch.config import get_settings
from imagesearch.dev import procs, world
from imagesearch.dev.client import ApiClient
from imagesearch.models.captioner import CAPTIONER_FILES
from imagesearch.models.clip import CLIP_FILES
from imagesearch.models.loading import ModelUnavailable, require_files
from imagesearch.redis_state import connect
from imagesearch.vocab import SearchMode

# The trained demo models ship in the repository, not in the package. IMAGESEARCH_DEMO_MODELS
# points at them; by default they are found next to this checkout (an editable install), else in
# ./models/demo.
_CHECKOUT_MODELS = Path(__file__).resolve().parents[2] / "models" / "demo"
DEMO_MODELS = Path(os.environ.get("IMAGESEARCH_DEMO_MODELS")
                   or (_CHECKOUT_MODELS if _CHECKOUT_MODELS.is_dir() else "models/demo")).resolve()
DEMO_SEED = 2024  # neither the training world (1) nor the held-out one (2)
SHOWN = 3  # hits printed per query and mode; recall is counted at 1 and at this depth
EXTRA_PER_QUERY = 2  # fitting images added for a query of yours that no sample fits
EXTRA_SEARCH = 5000  # how far along the world to look for them


def _hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def choose_models(data_dir: Path) -> tuple[dict[str, str], str]:
    """Configured models > pretrained from the hub > trained demo models > untrained tiny models."""
    settings = get_settings()
    if settings.models.clip_model_dir and settings.models.captioner_dir:
        return {}, f"configured models ({settings.models.clip_model_dir}, {settings.models.captioner_dir})"
    if _hub_reachable():
        return {}, f"pretrained models from the hub: {settings.models.clip_model}/{settings.models.clip_pretrained}, " \
                   f"{settings.models.captioner_model}"
    if _complete(DEMO_MODELS / "clip", CLIP_FILES) and _complete(DEMO_MODELS / "captioner", CAPTIONER_FILES):
        return ({"IMAGESEARCH_CLIP_MODEL_DIR": str(DEMO_MODELS / "clip"),
                 "IMAGESEARCH_CAPTIONER_DIR": str(DEMO_MODELS / "captioner")},
                "DEMO models: tiny CLIP and captioner trained offline on the procedural shapes world only")
    from imagesearch.dev.tiny_models import UNTRAINED_NOTE, build_tiny_models

    clip_dir, captioner_dir = build_tiny_models(data_dir / "untrained-models")
    return ({"IMAGESEARCH_CLIP_MODEL_DIR": str(clip_dir), "IMAGESEARCH_CAPTIONER_DIR": str(captioner_dir)},
            UNTRAINED_NOTE)


def _complete(directory: Path, groups: dict[str, tuple[str, ...]]) -> bool:
    try:
        require_files(directory, groups, "")
    except ModelUnavailable:
        return False
    return True


def _check_redis(url: str) -> None:
    import redis

    try:
        connect(url, timeout=3).ping()
    except redis.RedisError as exc:
        raise SystemExit(f"Redis is not reachable at {url} ({exc}). Start it (redis-server) or set "
                         "IMAGESEARCH_REDIS_URL.") from None


def stack_env(data_dir: Path) -> tuple[dict[str, str], str]:
    """Environment for child processes: the chosen models and this data folder."""
    settings = get_settings()
    _check_redis(settings.redis.url)
    data_dir.mkdir(parents=True, exist_ok=True)
    model_env, label = choose_models(data_dir)
    env = dict(os.environ, IMAGESEARCH_DATA_DIR=str(data_dir), **model_env)
    env.setdefault("IMAGESEARCH_REDIS_NAMESPACE", f"local-{os.getpid()}-")
    return env, label


def default_queries(samples: Sequence[world.Sample]) -> list[str]:
    """Queries with right answers among ``samples``: English (a full caption, a short "two red
    circles", a relation) and Chinese (a short one and a relation), from different images when
    there are enough."""
    single = [s for s in samples if len(s.groups) == 1]
    # Short queries are more telling with a count above one ("three green stars").
    several = [s for s in single[1:] if s.groups[0].count > 1] or single
    pairs = [s for s in samples if len(s.groups) == 2]

    def nth(pool: list[world.Sample], n: int) -> world.Sample:
        return pool[min(n, len(pool) - 1)]

    picks: list[str] = []
    if single:
        picks += [single[0].caption, nth(several, 0).groups[0].phrase(with_size=False),
                  nth(several, 1).groups[0].phrase_zh(with_size=False)]
    if pairs:
        picks += [pairs[0].caption, nth(pairs, 1).caption_zh]
    return list(dict.fromkeys(picks))


def relevant_ids(text: str, samples: Sequence[world.Sample]) -> set[str] | None:
    """The samples the query is true of, or None when the query is not about the shapes world."""
    description = world.describe(text)
    if description is None:
        return None
    return {s.id for s in samples if world.matches(description, s)}


def extra_samples(queries: Sequence[str], samples: Sequence[world.Sample], seed: int = DEMO_SEED,
                  per_query: int = EXTRA_PER_QUERY, search: int = EXTRA_SEARCH) -> list[world.Sample]:
    """For each query about the world that no sample fits, up to ``per_query`` samples that do fit,
    found further along world ``seed`` (after the samples' indices, within ``search`` more)."""
    start = len(samples)
    wanted = [(q, world.describe(q)) for q in queries]
    wanted = [(q, d) for q, d in wanted if d is not None and not any(world.matches(d, s) for s in samples)]
    found: list[world.Sample] = []
    if not wanted:
        return found
    counts = {q: 0 for q, _ in wanted}
    for index in range(start, start + search):
        sample = world.make_sample(seed, index)
        fits = [q for q, d in wanted if counts[q] < per_query and world.matches(d, sample)]
        if fits:
            found.append(sample)
            for q in fits:
                counts[q] += 1
        if all(c >= per_query for c in counts.values()):
            break
    return found


@dataclass
class Tally:
    """Recall of one mode over the queries that have right answers in the index."""

    queries: int = 0
    at_1: int = 0
    at_shown: int = 0

    def add(self, ranked: Sequence[str], relevant: set[str]) -> None:
        self.queries += 1
        self.at_1 += bool(set(ranked[:1]) & relevant)
        self.at_shown += bool(set(ranked[:SHOWN]) & relevant)

    def line(self, mode: str) -> str:
        if not self.queries:
            return f"  {mode:<8} (no query with a right answer)"
        return (f"  {mode:<8} R@1 {self.at_1}/{self.queries} = {self.at_1 / self.queries:.2f}   "
                f"R@{SHOWN} {self.at_shown}/{self.queries} = {self.at_shown / self.queries:.2f}")


def mark(image_id: str, relevant: set[str] | None) -> str:
    if relevant is None:
        return "?"
    return "✓" if image_id in relevant else "✗"


def run_demo(images: int, queries: list[str], keep_running: bool, port: int) -> int:
    data_dir = get_settings().data_dir.resolve() / "demo"
    env, label = stack_env(data_dir)
    print(f"models: {label}")
    print(f"starting the API and the embed and caption workers (logs in {data_dir / 'logs'}) ...")
    try:
        with procs.local_stack(env, data_dir / "logs", port) as base:
            client = ApiClient(base)
            samples = world.generate(images, seed=DEMO_SEED)
            chosen = list(queries) or default_queries(samples)
            extras = extra_samples(chosen, samples)
            if extras:
                print(f"added {len(extras)} images from further along the world that fit your queries")
            samples += extras
            by_id = {sample.id: sample for sample in samples}
            ids = [client.upload(s.image_jpeg, f"{s.id}.jpg", external_id=s.id) for s in samples]
            print(f"uploaded {len(ids)} sample images from the procedural world")
            started = time.monotonic()
            client.wait_settled(ids, progress=lambda done, total: print(
                f"\r  indexed and captioned: {done}/{total}", end="", flush=True))
            print(f"  ({time.monotonic() - started:.1f} s)")
            tallies = {str(mode): Tally() for mode in SearchMode}
            for text in chosen:
                relevant = relevant_ids(text, samples)
                print(f'\n"{text}" ({world.query_language(text)}): ' + _fits(relevant))
                for mode in SearchMode:
                    body, _ = client.search(text=text, mode=mode, k=SHOWN)
                    _print(mode, body, by_id, relevant, world.is_chinese(text))
                    if relevant:
                        tallies[str(mode)].add([hit["external_id"] for hit in body["hits"]], relevant)
            print(f"\nrecall over the queries with a right answer (✓: the query is true of the image; "
                  f"{len(samples)} images):")
            for mode, tally in tallies.items():
                print(tally.line(mode))
            print(f"\nmodels: {label}")
            if keep_running:
                print(f"API at {base} (GET /v1/images/<id>, POST /v1/search). Ctrl-C stops everything.")
                while True:
                    time.sleep(3600)
    except KeyboardInterrupt:
        pass
    return 0


def _fits(relevant: set[str] | None) -> str:
    if relevant is None:
        return "not about the shapes world, so its hits are not marked"
    return f"{len(relevant)} indexed image{'s' if len(relevant) != 1 else ''} fit it"


def _print(mode: str, body: dict, samples: dict[str, world.Sample], relevant: set[str] | None,
           chinese: bool) -> None:
    """Each hit, marked, with its generated caption and what the image really shows."""
    print(f"  [{mode}, {body['took_ms']:.0f} ms]")
    for rank, hit in enumerate(body["hits"], start=1):
        sample = samples.get(hit["external_id"] or "")
        truth = "?" if sample is None else (f"{sample.caption} / {sample.caption_zh}" if chinese else sample.caption)
        print(f"    {rank}. {mark(hit['external_id'] or '', relevant)} {hit['score']:+.3f}  "
              f"generated: {hit['caption'] or '-':<44} truth: {truth}")
