"""The worker's prefetch leaves room for the next batch to fill while one runs in every process.

A batch's messages stay unacknowledged until it returns (late acks), and Celery stops fetching at
``worker_prefetch_multiplier`` x processes unacknowledged messages: sized to one batch per process,
a worker running its batches could not buffer a single message for the next ones, which then
started only after a fetch, or as whatever partial batch had arrived.
"""

from __future__ import annotations

import pytest

from imagesearch.config import Settings, WorkerSettings
from imagesearch.vocab import Stage
from workers.celery_app import make_celery


@pytest.mark.parametrize("embed, caption", [(64, 8), (8, 8), (10, 8), (4, 32)])
@pytest.mark.parametrize("processes", [1, 2, 4])
def test_prefetch_holds_a_running_batch_per_process_and_one_more_filling(embed, caption, processes):
    settings = Settings(workers=WorkerSettings(_env_file=None, embed_flush_every=embed, caption_batch_size=caption))
    prefetch = make_celery(settings).conf.worker_prefetch_multiplier * processes
    for flush_every in (embed, caption):
        assert prefetch >= (processes + 1) * flush_every


@pytest.mark.parametrize("processes", [1, 2, 4])
def test_each_stage_worker_prefetches_for_its_own_batches(processes):
    workers = WorkerSettings(_env_file=None, embed_flush_every=64, caption_batch_size=8)
    for stage in Stage:
        prefetch = workers.prefetch_multiplier([stage]) * processes
        assert prefetch >= (processes + 1) * workers.batch_messages(stage)
    # A caption worker is not sized by the embed batch: 16 messages per process, not 128.
    assert workers.prefetch_multiplier([Stage.CAPTION]) == 16
    assert workers.prefetch_multiplier([Stage.EMBED, Stage.CAPTION]) == 128


def test_the_worker_command_passes_its_stages_prefetch(monkeypatch):
    from typer.testing import CliRunner

    import cli.processes
    from cli import app

    argv: list[list[str]] = []
    monkeypatch.setattr(cli.processes, "_exec", argv.append)
    monkeypatch.setenv("IMAGESEARCH_CAPTION_BATCH_SIZE", "6")
    monkeypatch.setenv("IMAGESEARCH_EMBED_FLUSH_EVERY", "40")
    cli.processes.get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["worker", "caption"])
    finally:
        cli.processes.get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    (command,) = argv
    assert command[command.index("--prefetch-multiplier") + 1] == "12"


@pytest.mark.parametrize("extra, allowed", [([], True), (["-P", "solo"], True), (["--pool=prefork"], True),
                                            (["-P", "threads"], False), (["--pool", "gevent"], False),
                                            (["-Peventlet"], False)])
def test_the_worker_command_refuses_pools_the_batches_are_not_safe_in(monkeypatch, extra, allowed):
    from typer.testing import CliRunner

    import cli.processes
    from cli import app

    argv: list[list[str]] = []
    monkeypatch.setattr(cli.processes, "_exec", argv.append)
    result = CliRunner().invoke(app, ["worker", "embed", *extra])
    assert (result.exit_code == 0) == allowed, result.output
    assert bool(argv) == allowed
    if not allowed:
        assert "prefork (default) or solo pool" in result.output
