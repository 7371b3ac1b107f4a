"""Image intake, status, thumbnails and deletion."""

from __future__ import annotations

import logging
import re

from flask import Blueprint, Response, jsonify, request, url_for

from api.auth import AUTH_RESPONSES, caller
from api.context import services
from api.errors import ApiError
from api.openapi import Resp, UploadForm, spec
from imagesearch import ingest, metrics
from imagesearch.blobs import BlobMissing
from imagesearch.records import DEFAULT_COLLECTION, ImageRecord
from schemas import AcceptedOut, ImageOut
from schemas.api import NAME_PATTERN, ErrorOut

bp = Blueprint("images", __name__, url_prefix="/v1/images")
log = logging.getLogger(__name__)
TAGS = ["images"]
_NAME = re.compile(NAME_PATTERN)


def thumbnail_url(record: ImageRecord) -> str | None:
    return url_for("images.thumbnail", image_id=record.id) if record.thumb_key else None


def image_out(record: ImageRecord) -> ImageOut:
    return ImageOut(
        id=record.id, status=record.status, caption=record.caption, caption_status=record.caption_status,
        error=record.error, collection=record.collection, external_id=record.external_id, tags=record.tags,
        source=record.source, width=record.width, height=record.height, thumbnail_url=thumbnail_url(record),
        image_model=record.image_model, caption_model=record.caption_model, created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _field(name: str, default: str | None = None) -> str | None:
    value = request.form.get(name, default)
    if value is not None and value != default and not _NAME.match(value):
        raise ApiError(422, "invalid_request", f"{name} must match {NAME_PATTERN}")
    return value


@bp.post("")
@spec.validate(form=UploadForm, tags=TAGS, skip_validation=True, resp=Resp(
    HTTP_202=(AcceptedOut, "Accepted: stored and queued for indexing; Location names the image."),
    HTTP_400=(ErrorOut, "No file, or an empty one."), HTTP_413=(ErrorOut, "Larger than MAX_UPLOAD_BYTES."),
    HTTP_415=(ErrorOut, "Not an image in an accepted format."),
    HTTP_422=(ErrorOut, "Invalid collection, external_id or tags."),
    HTTP_503=(ErrorOut, "Store or broker unavailable."), **AUTH_RESPONSES))
def upload():
    """Upload an image to index.

    Stores the original, records it as `queued` and queues it for the embed worker; poll
    `GET /v1/images/{id}` until `status` is `indexed` (searchable in image mode) and
    `caption_status` is `done` (covered by caption and hybrid modes).
    """
    file = request.files.get("file")
    if file is None:
        raise ApiError(400, "missing_file", "send the image as multipart/form-data field 'file'")
    data = file.read()
    if not data:
        raise ApiError(400, "empty_file", "the uploaded file is empty")
    tags = [t.strip() for t in request.form.get("tags", "").split(",") if t.strip()]
    if len(tags) > 64 or any(len(t) > 128 for t in tags):
        raise ApiError(422, "invalid_request", "at most 64 tags of at most 128 characters")
    svc = services()
    record = ingest.accept(
        ingest.Upload(data=data, filename=file.filename or "", collection=_field("collection", DEFAULT_COLLECTION),
                      tenant=caller().tenant, external_id=_field("external_id"), tags=tuple(tags)),
        settings=svc.settings, store=svc.store, blobs=svc.blobs, enqueue=svc.enqueue_embed,
    )
    metrics.image_accepted()
    log.info("image accepted", extra={"image_id": record.id, "collection": record.collection, "bytes": len(data)})
    body = AcceptedOut(id=record.id, status=record.status).model_dump()
    return jsonify(body), 202, {"Location": url_for("images.get_image", image_id=record.id)}


def _record(image_id: str) -> ImageRecord:
    record = services().store.get(image_id)
    # Another tenant's image is indistinguishable from a missing one.
    if record is None or record.tenant != caller().tenant:
        raise ApiError(404, "not_found", f"no image with id {image_id!r}")
    return record


@bp.get("/<image_id>")
@spec.validate(tags=TAGS, skip_validation=True, path_parameter_descriptions={"image_id": "The image's id."},
               resp=Resp(HTTP_200=ImageOut, HTTP_404=(ErrorOut, "No such image."), **AUTH_RESPONSES))
def get_image(image_id: str):
    """An image's record: indexing status, caption, collection, tags, models, thumbnail URL."""
    return jsonify(image_out(_record(image_id)).model_dump())


@bp.get("/<image_id>/thumbnail")
@spec.validate(tags=TAGS, skip_validation=True, path_parameter_descriptions={"image_id": "The image's id."},
               resp=Resp(HTTP_200=(None, "The JPEG thumbnail."),
                         HTTP_404=(ErrorOut, "No such image or no thumbnail yet."), **AUTH_RESPONSES))
def thumbnail(image_id: str):
    """The image's thumbnail (JPEG), written when the image is indexed."""
    record = _record(image_id)
    if not record.thumb_key:
        raise ApiError(404, "not_found", "this image has no thumbnail yet")
    try:
        data = services().blobs.get(record.thumb_key)
    except BlobMissing:
        raise ApiError(404, "not_found", "thumbnail missing") from None
    return Response(data, mimetype="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@bp.delete("/<image_id>")
@spec.validate(tags=TAGS, skip_validation=True, path_parameter_descriptions={"image_id": "The image's id."},
               resp=Resp(HTTP_204=(None, "Deleted."), HTTP_404=(ErrorOut, "No such image."), **AUTH_RESPONSES))
def delete(image_id: str):
    """Delete an image: its record, vectors, original and thumbnail."""
    svc = services()
    _record(image_id)  # 404 unless it exists for this tenant
    if not ingest.remove(image_id, store=svc.store, blobs=svc.blobs):
        raise ApiError(404, "not_found", f"no image with id {image_id!r}")
    return "", 204
