"""The ``imagesearch`` command line: an adapter over the domain, like ``api/`` and ``workers/``.

One module per command group. Process commands exec the real servers (gunicorn, celery), so the CLI
never imports Flask or Celery; operations reach the domain through the composition root.
"""

from __future__ import annotations

import typer

from cli import dead_letters, dev, keys, models, operations, processes, profiles, searching

app = typer.Typer(help="Semantic image search: index images with CLIP and captions, search them by meaning.",
                  no_args_is_help=True, add_completion=False)
processes.register(app)
searching.register(app)
operations.register(app)
app.add_typer(models.app, name="models")
app.add_typer(keys.app, name="keys")
app.add_typer(dead_letters.app, name="dead-letters")
app.add_typer(profiles.app, name="profiles")
app.add_typer(dev.app, name="dev")


def main() -> None:
    app()
