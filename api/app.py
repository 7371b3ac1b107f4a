"""The application factory."""

from __future__ import annotations

import re
import uuid

from flask import Flask, g, request

from api import admin, auth, errors, events, health, images, metrics, openapi, page, search
from imagesearch import logging_setup
from imagesearch import metrics as domain_metrics
from imagesearch.config import Settings, get_settings
from imagesearch.taskqueue import TaskQueue
from wiring import build_services

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def create_app(settings: Settings | None = None, *, queue: TaskQueue | None = None) -> Flask:
    """The API over the settings' services; ``queue`` replaces the Celery task queue (tests)."""
    settings = settings or get_settings()
    logging_setup.configure()
    domain_metrics.configure(settings)  # before any metric is created: picks the multiprocess folder
    app = Flask(__name__)
    # Werkzeug refuses bodies past this before reading them (413), so a huge upload costs nothing.
    app.config["MAX_CONTENT_LENGTH"] = settings.ingest.max_upload_bytes + 64 * 1024
    app.extensions["imagesearch"] = svc = build_services(settings, queue=queue)
    errors.register(app)
    auth.register(app, svc)
    _bind_log_context(app)
    app.register_blueprint(page.bp)
    health.register(app, svc)  # readiness, and this process's warmth (api.gunicorn_conf warms it)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(images.bp)
    app.register_blueprint(search.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(events.bp)
    openapi.register(app)
    return app


def _bind_log_context(app: Flask) -> None:
    """Every log line of a request carries its request id (and the image id when the URL names one)."""

    @app.before_request
    def _bind():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        g.log_token = logging_setup.bind(request_id=g.request_id,
                                         image_id=(request.view_args or {}).get("image_id"))

    @app.after_request
    def _echo(response):
        if "request_id" in g:
            response.headers["X-Request-ID"] = g.request_id
        return response

    @app.teardown_request
    def _unbind(_exc):
        token = g.pop("log_token", None)
        if token is not None:
            try:
                logging_setup.unbind(token)
            except ValueError:  # reset from another context (should not happen): leave it
                pass
