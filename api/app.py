"""The application factory."""

from __future__ import annotations

import logging
from typing import Callable

from flask import Flask

from api import errors, health, images, search
from api.context import Services
from imagesearch.config import Settings, get_settings


def create_app(settings: Settings | None = None, enqueue: Callable[[str], None] | None = None) -> Flask:
    settings = settings or get_settings()
    app = Flask(__name__)
    # Werkzeug refuses bodies past this before reading them (413), so a huge upload costs nothing.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + 64 * 1024
    if enqueue is None:
        from workers.enqueue import enqueue_embed as enqueue
    app.extensions["imagesearch"] = Services(settings, enqueue)
    errors.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(images.bp)
    app.register_blueprint(search.bp)
    logging.basicConfig(level=logging.INFO)
    return app
