"""The search page at ``/``: plain HTML + vanilla JS (api/templates, api/static) over the public API."""

from __future__ import annotations

from flask import Blueprint, render_template

from api.openapi import Resp, spec

bp = Blueprint("page", __name__)


@bp.get("/")
@spec.validate(tags=["page"], skip_validation=True, resp=Resp(HTTP_200=(None, "The search page (HTML).")))
def index():
    """The search page: search by text or by a dropped image, upload images and watch them being indexed."""
    return render_template("index.html")
