"""``imagesearch demo``: the whole system on one machine, end to end, in one command.

Starts the API and both workers as the Procfile would, uploads sample images from the
procedural world over HTTP, waits until they are indexed and captioned, and prints what each
search mode returns.
"""

from __future__ import annotations

import os
import socket
import time
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
DEFAULT_QUERIES = ("one red circle", "two blue squares", "a green star on the left", "three yellow triangles")


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


def run_demo(images: int, queries: list[str], keep_running: bool, port: int) -> int:
    data_dir = get_settings().data_dir.resolve() / "demo"
    env, label = stack_env(data_dir)
    print(f"models: {label}")
    print(f"starting the API and the embed and caption workers (logs in {data_dir / 'logs'}) ...")
    try:
        with procs.local_stack(env, data_dir / "logs", port) as base:
            client = ApiClient(base)
            samples = world.generate(images, seed=2024)
            truth = {sample.id: sample.captions[0] for sample in samples}
            ids = [client.upload(s.image_jpeg, f"{s.id}.jpg", external_id=s.id) for s in samples]
            print(f"uploaded {len(ids)} sample images from the procedural world")
            started = time.monotonic()
            client.wait_settled(ids, progress=lambda done, total: print(
                f"\r  indexed and captioned: {done}/{total}", end="", flush=True))
            print(f"  ({time.monotonic() - started:.1f} s)")
            for text in queries or DEFAULT_QUERIES:
                for mode in SearchMode:
                    body, _ = client.search(text=text, mode=mode, k=3)
                    _print(text, mode, body, truth)
            print(f"\nmodels: {label}")
            if keep_running:
                print(f"API at {base} (GET /v1/images/<id>, POST /v1/search). Ctrl-C stops everything.")
                while True:
                    time.sleep(3600)
    except KeyboardInterrupt:
        pass
    return 0


def _print(text: str, mode: str, body: dict, truth: dict[str, str]) -> None:
    """Each hit with its generated caption and, for comparison, what the image really shows."""
    print(f'\n"{text}"  [{mode}, {body["took_ms"]:.0f} ms]')
    for rank, hit in enumerate(body["hits"], start=1):
        print(f"  {rank}. {hit['score']:+.3f}  generated: {hit['caption'] or '-':<40} "
              f"truth: {truth.get(hit['external_id'] or '', '?')}")
