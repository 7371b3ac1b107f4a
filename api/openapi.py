"""OpenAPI document (spectree, from the pydantic models in :mod:`schemas`) and its interactive pages.

- ``GET /openapi.json``: the OpenAPI 3.1 document, generated from the routes and the models named
  in each view's ``@spec.validate(...)``;
- ``GET /docs``: Swagger UI; ``GET /docs/redoc``: Redoc. With spectree's ``offline`` extra
  (offapi) their JavaScript is served inline, so the pages work without internet access.

Request validation stays in the views, with the very classes the document names
(``SearchRequest.model_validate`` in ``api/search.py``): the views take JSON *or* multipart on
one route and tell malformed JSON (400) from invalid fields (422), which spectree's Flask plugin
cannot express (it reads an unparsable body as ``{}``). So the decorators run with
``skip_validation=True`` and only document; every pydantic ``ValidationError`` leaves through
``api/errors.py`` as ``422 {"error": {"code": "invalid_request", "message", "details"}}``. Should a
route ever let spectree validate, :func:`_spectree_errors` puts its errors in the same format.
"""

from __future__ import annotations

import copy
import re
from importlib import metadata
from typing import Any, Literal

from flask import Flask, Response, current_app, jsonify, url_for
from pydantic import BaseModel, ConfigDict, Field
from spectree import Response as Resp
from spectree import SpecTree

from imagesearch.vocab import Cutoff, SearchMode, Status
from schemas.api import EXTERNAL_ID_PATTERN, MAX_BATCH_FILES, MAX_K, MAX_LIST, MAX_TEXT, NAME_PATTERN, ErrorOut

TITLE = "imagesearch API"
DESCRIPTION = (
    "Semantic image search: upload images (they are embedded with CLIP and captioned by background "
    "workers), then search them by text, by an uploaded image or by an indexed image's id, in "
    "`image`, `caption` or `hybrid` mode. Errors are JSON `{\"error\": {\"code\", \"message\", \"details\"?}}`."
)


def _version() -> str:
    try:
        return metadata.version("imagesearch")
    except metadata.PackageNotFoundError:
        return "0"


spec = SpecTree(
    "flask",
    title=TITLE,
    description=DESCRIPTION,
    version=_version(),
    path="docs",
    validation_error_status=422,
    validation_error_model=ErrorOut,
    # Component names are the model names (unique across schemas/ and this module).
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
)


# --- documentation-only models: multipart bodies and plain responses ---------------------------
# (The JSON request and response models live in schemas/api.py; these describe the multipart
# forms and the small health bodies, which the views read field by field.)

class UploadForm(BaseModel):
    """``multipart/form-data`` body of ``POST /v1/images``."""

    file: bytes = Field(description="The image (JPEG, PNG, WebP, GIF, BMP, TIFF).")
    collection: str = Field(default="default", pattern=NAME_PATTERN, description="Collection to file it under.")
    external_id: str | None = Field(default=None, pattern=EXTERNAL_ID_PATTERN,
                                    description="Your id for it; the same id in a collection replaces the record.")
    tags: str | None = Field(default=None, description="Comma-separated tags (at most 64, 128 characters each).")
    title: str | None = Field(default=None, max_length=512,
                              description="A title, searched by keyword (and hybrid) with the caption; any language.")
    description: str | None = Field(default=None, max_length=8192,
                                    description="A description, searched as the title is.")
    attributes: str | None = Field(
        default=None, description='Typed attributes as a JSON object, e.g. `{"brand": "Acme", "price": 19.9}`: '
        "only names IMAGESEARCH_ATTRIBUTES declares, each of its type (dates as ISO 8601 or epoch seconds); "
        "an undeclared name or a wrong type is a 422 naming it.")


class BatchUploadForm(BaseModel):
    """``multipart/form-data`` body of ``POST /v1/images/batch``."""

    file: list[bytes] = Field(description=f"The images: one `file` part each, at most {MAX_BATCH_FILES}.")
    collection: str = Field(default="default", pattern=NAME_PATTERN, description="Collection for every file.")
    tags: str | None = Field(default=None, description="Comma-separated tags for every file.")
    items: str | None = Field(
        default=None, description="A JSON array with one object per file, in the order of the `file` parts: "
        "`{external_id?, title?, description?, tags?, attributes?}` (see BatchItemIn); item tags join the shared ones.")


class ImageListQuery(BaseModel):
    """Query of ``GET /v1/images``; every condition must hold."""

    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(default=None, pattern=NAME_PATTERN)
    status: Status | None = Field(default=None, description="Only records in this indexing status.")
    tag: list[str] | None = Field(default=None, description="Repeatable: records with any of these tags.")
    created_after: str | None = Field(default=None, description="created_at at or after (ISO 8601 or epoch seconds).")
    created_before: str | None = Field(default=None, description="created_at before (ISO 8601 or epoch seconds).")
    taken_after: str | None = Field(default=None, description="taken_at at or after (records without one never match).")
    taken_before: str | None = Field(default=None, description="taken_at before.")
    filter: str | None = Field(
        default=None, description="The search body's `filter` (tags, created_at, taken_at, attributes) as JSON; "
        "it may not repeat a condition the parameters above set.")
    limit: int = Field(default=100, ge=1, le=MAX_LIST)
    cursor: str | None = Field(default=None, description="`next_cursor` of the previous page.")


class DeleteByExternalIdQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str = Field(default="default", pattern=NAME_PATTERN,
                            description="The collection the upload named (a PATCH that moved the record since does "
                                        "not change which upload it belongs to).")
    external_id: str = Field(pattern=EXTERNAL_ID_PATTERN, description="The upload's external_id (URL-encoded).")


class SearchForm(BaseModel):
    """``multipart/form-data`` body of ``POST /v1/search``: search by an uploaded image (``file``)."""

    model_config = ConfigDict(extra="forbid")

    file: bytes | None = Field(default=None, description="Query image (instead of text or image_id).")
    text: str | None = Field(default=None, max_length=MAX_TEXT)
    image_id: str | None = Field(default=None, min_length=1, max_length=128)
    mode: SearchMode = SearchMode.IMAGE
    k: int = Field(default=10, ge=1, le=MAX_K)
    collection: str | None = Field(default=None, pattern=NAME_PATTERN)
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0)
    min_relevance: float | None = Field(default=None, ge=0.0, le=1.0)
    cutoff: Cutoff | None = None
    explain: bool = False
    dedup: bool = False


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str] = Field(description="store, broker, models (this process warm) and, under imagesearch "
                                   "serve, workers (every gunicorn worker warm): 'ok' or 'error: ...'")
    profile: dict[str, Any] | None = Field(
        default=None, description="The search profile `imagesearch eval --tune` saved for the models served "
        "(fusion, calibrated modes, when and on what it was fitted); null when none.")


# Responses that are not JSON: (method, path) -> content type and schema.
_NON_JSON: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/"): {"text/html": {"schema": {"type": "string"}}},
    ("get", "/metrics"): {"text/plain": {"schema": {"type": "string"}}},
    ("get", "/v1/images/{image_id}/thumbnail"): {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
}


def document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of this app's routes (built once per app, on first request)."""
    cached = app.extensions.get("openapi_document")
    if cached is None:
        # spectree lifts nested models out of its registry *by deleting them* while it generates
        # (`_get_model_definitions`): a second app's document would lack them. Generate from a copy.
        models = copy.deepcopy(spec.models)
        try:
            with app.app_context():
                cached = spec._generate_spec()  # per app: spectree's own cache (.spec) is per SpecTree instance
        finally:
            spec.models = models
        endpoints = {(method.lower(), _openapi_path(rule.rule)): rule.endpoint
                     for rule in app.url_map.iter_rules() for method in rule.methods or ()}
        for path, operations in cached["paths"].items():
            for method, operation in operations.items():
                if (method, path) in endpoints:  # "images.get_image" -> "images_get_image"
                    operation["operationId"] = endpoints[(method, path)].replace(".", "_")
                if "requestBody" not in operation and not any(
                        p.get("in") == "query" for p in operation.get("parameters", ())):
                    # spectree adds the validation error to every route; only bodies and queries are validated.
                    operation["responses"].pop("422", None)
                if path.startswith("/v1/") and not path.startswith("/v1/events/"):
                    # Keys are optional: an API bound to loopback runs open (README, "API keys").
                    operation["security"] = [{"bearerKey": []}, {"headerKey": []}, {}]
                content = _NON_JSON.get((method, path))
                if content and "200" in operation["responses"]:
                    operation["responses"]["200"]["content"] = content
        cached.setdefault("components", {})["securitySchemes"] = {
            "bearerKey": {"type": "http", "scheme": "bearer", "description": "An API key (`imagesearch keys create`)."},
            "headerKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "The same key."},
        }
        app.extensions["openapi_document"] = cached
    return cached


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _page(template: str) -> Response:
    html = spec.config.page_templates[template].format(
        spec_url=url_for("openapi_json"), spec_path=spec.config.path, **spec.config.swagger_oauth2_config())
    return Response(html, mimetype="text/html")


def register(app: Flask) -> None:
    # Endpoint names starting with "openapi" and paths under /docs are left out of the document.
    app.add_url_rule("/openapi.json", "openapi_json", lambda: jsonify(document(current_app)))
    app.add_url_rule("/docs", "openapi_docs", lambda: _page("swagger"))
    app.add_url_rule("/docs/", "openapi_docs_slash", lambda: _page("swagger"))
    app.add_url_rule("/docs/redoc", "openapi_redoc", lambda: _page("redoc"))


__all__ = ["BatchUploadForm", "DeleteByExternalIdQuery", "HealthOut", "ImageListQuery", "ReadyOut", "Resp",
           "SearchForm", "UploadForm", "document", "register", "spec"]
