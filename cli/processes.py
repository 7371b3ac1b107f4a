"""Commands that run the service's processes: ``serve``, ``worker``, ``s3-listener``, ``demo``.

These are the one spelling of each process: the Procfile, compose, the Dockerfiles and the test
harness (``imagesearch.dev.procs``) all run them. Each execs the real server, so signals from the
process manager reach it directly and the CLI imports neither Flask nor Celery.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import typer

from imagesearch.config import get_settings
from imagesearch.vocab import Stage


def _exec(args: list[str]) -> None:
    """Replace this process, so signals from the process manager reach the server directly."""
    os.execvp(args[0], args)


def gunicorn_config() -> Path:
    """The file of ``api.gunicorn_conf``. gunicorn gets the path, not the module name: importing
    ``api.gunicorn_conf`` would run the ``api`` package's imports (Flask, torch) in the master,
    which only forks, and finding the package does not import it."""
    spec = importlib.util.find_spec("api")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the api package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "gunicorn_conf.py"


def serve(host: str = typer.Option("127.0.0.1", help="Address to bind."),
          port: int = typer.Option(int(os.environ.get("PORT", 8000)), help="Port (default $PORT or 8000)."),
          workers: int = typer.Option(2, help="gunicorn worker processes."),
          threads: int = typer.Option(4, help="Threads per worker.")) -> None:
    """Run the HTTP API under gunicorn. Bound to a loopback address, API keys are optional by default.

    Each worker loads the query model and the store's vectors before it accepts a request, and
    /readyz answers ready once every worker has (api/gunicorn_conf.py)."""
    os.environ["IMAGESEARCH_BIND_HOST"] = host
    _exec([sys.executable, "-m", "gunicorn", "-c", str(gunicorn_config()), "api.wsgi:app",
           "-b", f"{host}:{port}", "-w", str(workers),
           "--threads", str(threads), "--timeout", "120", "--access-logfile", "-"])


def worker(ctx: typer.Context,
           stages: str = typer.Argument(..., help="The stage whose queue to consume: embed, caption, or both "
                                                  "as embed,caption."),
           concurrency: int = typer.Option(1, help="Worker processes (each loads its own model)."),
           name: str = typer.Option("", help="Celery node name (default: <stages>@<host>).")) -> None:
    """Run a Celery worker for one stage's queue (or several); further options go to `celery worker`."""
    try:
        chosen = list(dict.fromkeys(Stage(s.strip()) for s in stages.split(",") if s.strip()))
    except ValueError:
        raise typer.BadParameter(f"stages are among {', '.join(Stage)}, comma-separated") from None
    if not chosen:
        raise typer.BadParameter(f"name a stage: {', '.join(Stage)}")
    pool = _pool(ctx.args)
    if pool not in (None, "prefork", "solo"):
        # The batching tasks' buffer and pool callbacks share the consumer's thread only in these.
        raise typer.BadParameter(f"the batching tasks run in the prefork (default) or solo pool, not {pool}")
    settings = get_settings()
    _exec([sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
           "-Q", ",".join(settings.keys.queue(stage) for stage in chosen), "-c", str(concurrency),
           "--prefetch-multiplier", str(settings.workers.prefetch_multiplier(chosen)),
           "-n", name or f"{'+'.join(chosen)}@%h", "--loglevel", "INFO", *ctx.args])


def _pool(args: list[str]) -> str | None:
    """The pool named in celery's own options (``-P x``, ``-Px``, ``--pool x``, ``--pool=x``), if any."""
    pool = None
    for i, arg in enumerate(args):
        if arg in ("-P", "--pool") and i + 1 < len(args):
            pool = args[i + 1]
        elif arg.startswith("--pool="):
            pool = arg.removeprefix("--pool=")
        elif arg.startswith("-P") and len(arg) > 2:
            pool = arg[2:]
    return pool


def s3_listener() -> None:
    """Long-poll IMAGESEARCH_SQS_QUEUE_URL and index the objects S3 notifications name."""
    _exec([sys.executable, "-m", "workers.s3_listener"])


def demo(images: int = typer.Option(60, help="How many sample images to index."),
         query: list[str] = typer.Option([], "--query", "-q", help="Queries to run (repeatable), in English or "
                                         "Chinese. Default: drawn from the indexed images, in both languages."),
         keep_running: bool = typer.Option(False, help="Leave the API and workers running afterwards."),
         port: int = typer.Option(0, help="API port (0: a free one).")) -> None:
    """Start the API and both workers, index sample images, and print search results marked right or wrong."""
    from imagesearch.dev.demo import run_demo

    raise typer.Exit(run_demo(images=images, queries=query, keep_running=keep_running, port=port))


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(worker)
    app.command("s3-listener")(s3_listener)
    app.command()(demo)
