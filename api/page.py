"""The search page at ``/``: plain HTML + vanilla JS (api/templates, api/static) over the public API."""

from __future__ import annotations

from flask import Blueprint, render_template

from api.auth import is_open
from api.context import services
from api.openapi import Resp, spec

bp = Blueprint("page", __name__)


@bp.get("/")
@spec.validate(tags=["page"], skip_validation=True, resp=Resp(HTTP_200=(None, "The search page (HTML).")))
def index():
    """The search page: search by text or by a dropped image, upload images and watch them being indexed."""
    settings = services().settings
    # The page builds its attribute filter from the declared names and types, and says up front that
    # a key is needed; neither is a secret (the OpenAPI document and a 401 tell as much).
    attributes = {name: str(kind) for name, kind in settings.ingest.attribute_schema().types.items()}
    return render_template("index.html", attributes=attributes, auth="open" if is_open(settings) else "keys")
