"""Image intake (one file or a batch), listing, status, edits, thumbnails and deletion."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from pydantic import ValidationError

from api.auth import AUTH_RESPONSES, caller
from api.context import services
from api.errors import ApiError, status_of
from api.openapi import BatchUploadForm, DeleteByExternalIdQuery, ImageListQuery, Resp, UploadForm, spec
from imagesearch import ingest, metadata, metrics
from imagesearch.attributes import AttributeSchema, Value
from imagesearch.blobs import BlobMissing
from imagesearch.errors import ImageSearchError
from imagesearch.filtering import parse_where
from imagesearch.records import DEFAULT_COLLECTION, ImageRecord, upload_id
from imagesearch.stores.base import Filters, RecordPatch
from schemas import AcceptedOut, ImageOut
from schemas.api import (
    EXTERNAL_ID_PATTERN,
    MAX_BATCH_FILES,
    NAME_PATTERN,
    BatchItemIn,
    BatchOut,
    BatchResultOut,
    ErrorBody,
    ErrorOut,
    ImageListOut,
    ImagePatchIn,
)

bp = Blueprint("images", __name__, url_prefix="/v1/images")
log = logging.getLogger(__name__)
TAGS = ["images"]
_PATTERNS = {"collection": NAME_PATTERN, "external_id": EXTERNAL_ID_PATTERN}
_METADATA_FIELDS = ("title", "description", "tags", "attributes")
# The items JSON of a full batch (100 items, each up to a long description) is larger than
# Werkzeug's default 500 kB for one form field.
_MAX_ITEMS_FIELD = 4 * 1024 * 1024


def thumbnail_url(record: ImageRecord) -> str | None:
    return url_for("images.thumbnail", image_id=record.id) if record.thumb_key else None


def image_out(record: ImageRecord) -> ImageOut:
    return ImageOut(
        id=record.id, status=record.status, caption=record.caption, caption_status=record.caption_status,
        error=record.error, collection=record.collection, external_id=record.external_id, tags=record.tags,
        source=record.source, width=record.width, height=record.height, thumbnail_url=thumbnail_url(record),
        image_model=record.image_model, caption_model=record.caption_model, created_at=record.created_at,
        updated_at=record.updated_at, title=record.title, description=record.description,
        attributes=record.attributes, taken_at=record.taken_at,
    )


def _schema() -> AttributeSchema:
    return services().settings.ingest.attribute_schema()


def _name(name: str, value: str | None) -> str | None:
    pattern = _PATTERNS[name]
    if value is not None and not re.fullmatch(pattern, value):  # `$` alone lets a final newline in
        raise ApiError(422, "invalid_request", f"{name} must match {pattern}")
    return value


def _field(name: str, default: str | None = None) -> str | None:
    value = request.form.get(name, default)
    return value if value == default else _name(name, value)


@bp.post("")
@spec.validate(form=UploadForm, tags=TAGS, skip_validation=True, resp=Resp(
    HTTP_202=(AcceptedOut, "Accepted: stored and queued for indexing; Location names the image."),
    HTTP_400=(ErrorOut, "No file, or an empty one."), HTTP_413=(ErrorOut, "Larger than MAX_UPLOAD_BYTES."),
    HTTP_415=(ErrorOut, "Not an image in an accepted format."),
    HTTP_422=(ErrorOut, "Invalid collection, external_id, tags, title or description, or an attribute that is "
                        "not declared or not of its type (the message names it)."),
    HTTP_503=(ErrorOut, "Store or broker unavailable."), **AUTH_RESPONSES))
def upload():
    """Upload an image to index.

    Stores the original, records it as `queued` and queues it for the embed worker; poll
    `GET /v1/images/{id}` until `status` is `indexed` (searchable in image mode) and
    `caption_status` is `done` (covered by caption and hybrid modes). `title` and `description`
    join the caption in keyword and hybrid search; `attributes` are filterable in search and listing.
    """
    file = request.files.get("file")
    if file is None:
        raise ApiError(400, "missing_file", "send the image as multipart/form-data field 'file'")
    data = file.read()
    if not data:
        raise ApiError(400, "empty_file", "the uploaded file is empty")
    meta = metadata.from_fields({name: request.form.get(name) for name in _METADATA_FIELDS}, _schema())
    svc = services()
    record = ingest.accept(
        ingest.Upload(data=data, filename=file.filename or "", collection=_field("collection", DEFAULT_COLLECTION),
                      tenant=caller().tenant, external_id=_field("external_id"), tags=meta.tags, title=meta.title,
                      description=meta.description, attributes=meta.attributes),
        settings=svc.settings, store=svc.store, blobs=svc.blobs, enqueue=svc.enqueue_embed,
    )
    metrics.image_accepted()
    log.info("image accepted", extra={"image_id": record.id, "collection": record.collection, "bytes": len(data)})
    body = AcceptedOut(id=record.id, status=record.status).model_dump()
    return jsonify(body), 202, {"Location": url_for("images.get_image", image_id=record.id)}


# -- batch upload -----------------------------------------------------------------------------------

@bp.post("/batch")
@spec.validate(form=BatchUploadForm, tags=TAGS, skip_validation=True, resp=Resp(
    HTTP_200=(BatchOut, "The request was read: one result per file, each with the status a single upload of it "
                        "would get (202 accepted, 400, 413, 415, 422, 503). Files accepted stay accepted whatever "
                        "happens to the others."),
    HTTP_400=(ErrorOut, "No `file` part."),
    HTTP_413=(ErrorOut, f"More than {MAX_BATCH_FILES} files, or a body over {MAX_BATCH_FILES} x MAX_UPLOAD_BYTES."),
    HTTP_422=(ErrorOut, "Invalid collection or tags, or `items` not a JSON array of one object per file."),
    **AUTH_RESPONSES))
def upload_batch():
    """Upload several images in one request.

    Each `file` part is handled as `POST /v1/images` would handle it, with the batch's
    `collection` and `tags` and the `items` element at its position, and gets its own result.
    The answer is 200 whenever the request itself is well-formed, even when every file was
    refused: read each result's `status`.
    """
    svc = services()
    limit = svc.settings.ingest.max_upload_bytes
    # Set before the body is first read: this view takes up to MAX_BATCH_FILES uploads.
    request.max_content_length = MAX_BATCH_FILES * limit + 1024 * 1024
    request.max_form_memory_size = _MAX_ITEMS_FIELD
    request.max_form_parts = 4 * MAX_BATCH_FILES + 16
    files = request.files.getlist("file")
    if not files:
        raise ApiError(400, "missing_file", "send the images as multipart/form-data fields named 'file'")
    if len(files) > MAX_BATCH_FILES:
        raise ApiError(413, "too_many_files", f"{len(files)} files; a batch takes at most {MAX_BATCH_FILES}")
    collection = _field("collection", DEFAULT_COLLECTION) or DEFAULT_COLLECTION
    shared_tags = metadata.parse_tags(request.form.get("tags") or ())
    items = _batch_items(request.form.get("items"), len(files))
    schema = _schema()
    tenant = caller().tenant
    intake = ingest.BatchIntake(settings=svc.settings, store=svc.store, blobs=svc.blobs, enqueue=svc.enqueue_embed)
    results: list[BatchResultOut] = []
    for index, file in enumerate(files):
        filename = file.filename or ""

        def result(status: int, image_id: str | None = None, code: str | None = None, message: str = "",
                   index: int = index, filename: str = filename) -> BatchResultOut:
            error = ErrorBody(code=code, message=message) if code else None
            return BatchResultOut(index=index, filename=filename, status=status, id=image_id, error=error)

        try:
            data = file.read(limit + 1)  # no more than one over the limit: a too-large part is never all in memory
            if not data:
                results.append(result(400, code="empty_file", message="the file is empty"))
                continue
            if len(data) > limit:
                results.append(result(413, code="too_large", message=f"the file is larger than {limit} bytes"))
                continue
            upload = _batch_upload(data, filename, items[index], collection, tenant, shared_tags, schema)
            accepted = intake.accept(upload)
        except ApiError as exc:
            results.append(result(exc.status, code=exc.code, message=exc.message))
            continue
        except ImageSearchError as exc:
            status, code = status_of(exc) or (500, "internal_error")
            if status >= 500:
                log.warning("batch file %d not accepted: %s", index, exc)
            results.append(result(status, code=code, message=str(exc)))
            continue
        finally:
            file.close()
        metrics.image_accepted()
        if accepted.unsent is not None:
            results.append(result(503, accepted.record.id, "broker_unavailable",
                                  f"stored and queued, but the task could not be sent ({accepted.unsent}); "
                                  "it is sent again later"))
        else:
            results.append(result(202, accepted.record.id))
    accepted_ids = [r.id for r in results if r.status == 202]
    log.info("batch accepted", extra={"files": len(files), "accepted": len(accepted_ids), "collection": collection})
    return jsonify(BatchOut(results=results).model_dump())


def _batch_items(raw: str | None, count: int) -> list[dict[str, Any]]:
    """The ``items`` array as one raw object per file (``{}`` where none is given); checked per file later,
    so one bad item refuses only its own file."""
    if raw is None or not raw.strip():
        return [{} for _ in range(count)]
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_request", f"items is not JSON: {exc}") from None
    if not isinstance(items, list) or len(items) != count or not all(isinstance(i, dict) for i in items):
        raise ApiError(422, "invalid_request", f"items must be a JSON array of {count} objects, one per file "
                                               "in the order of the file parts")
    return items


def _batch_upload(data: bytes, filename: str, raw: dict[str, Any], collection: str, tenant: str,
                  shared_tags: tuple[str, ...], schema: AttributeSchema) -> ingest.Upload:
    try:
        item = BatchItemIn.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "item"
        raise ApiError(422, "invalid_request", f"items[].{where}: {first['msg']}") from None
    meta = metadata.from_fields(item.model_dump(exclude={"external_id"}), schema)
    return ingest.Upload(data=data, filename=filename, collection=collection, tenant=tenant,
                         external_id=item.external_id, tags=metadata.parse_tags([*shared_tags, *meta.tags]),
                         title=meta.title, description=meta.description, attributes=meta.attributes)


# -- listing ----------------------------------------------------------------------------------------

def _encode_cursor(after: tuple[float, str] | None) -> str | None:
    if after is None:
        return None
    return base64.urlsafe_b64encode(json.dumps([after[0], after[1]]).encode()).rstrip(b"=").decode()


def _decode_cursor(cursor: str | None) -> tuple[float, str] | None:
    if not cursor:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        value = None
    if (not isinstance(value, list) or len(value) != 2 or isinstance(value[0], bool)
            or not isinstance(value[0], int | float) or not math.isfinite(value[0]) or not isinstance(value[1], str)):
        raise ApiError(422, "invalid_request", "cursor is not a next_cursor this API gave")
    return float(value[0]), value[1]


def _list_filter(params: ImageListQuery) -> dict[str, Any]:
    """The ``filter`` JSON with the conditions the plain parameters set added to it."""
    where: Any = {}
    if params.filter:
        try:
            where = json.loads(params.filter)
        except json.JSONDecodeError as exc:
            raise ApiError(422, "invalid_request", f"filter is not JSON: {exc}") from None
        if not isinstance(where, dict):
            raise ApiError(422, "invalid_request", "filter must be a JSON object")
    extra: dict[str, Any] = {}
    if params.tag:
        extra["tags"] = {"any": params.tag}
    for name, low, high in (("created_at", params.created_after, params.created_before),
                            ("taken_at", params.taken_after, params.taken_before)):
        bounds = {k: v for k, v in (("gte", low), ("lt", high)) if v is not None}
        if bounds:
            extra[name] = bounds
    for name in extra:
        if name in where:
            raise ApiError(422, "invalid_request", f"filter.{name} repeats a condition the query parameters set")
    return {**where, **extra}


@bp.get("")
@spec.validate(query=ImageListQuery, tags=TAGS, skip_validation=True, resp=Resp(
    HTTP_200=(ImageListOut, "A page of records, oldest first."),
    HTTP_422=(ErrorOut, "An invalid parameter, filter or cursor (the message names it)."),
    HTTP_503=(ErrorOut, "Store unavailable."), **AUTH_RESPONSES))
def list_images():
    """List this tenant's images, oldest first, a page at a time.

    Every condition given must hold: `collection`, `status`, any of the `tag`s, the date bounds
    (`*_after` inclusive, `*_before` exclusive) and `filter`, the search body's filter language as
    JSON. Pass `next_cursor` as `cursor` for the next page; records created meanwhile appear on
    a later page, none is given twice.
    """
    args: dict[str, Any] = {k: v for k, v in request.args.items() if k != "tag"}
    if "tag" in request.args:
        args["tag"] = request.args.getlist("tag")
    params = ImageListQuery.model_validate(args)
    where = parse_where(_list_filter(params), _schema())
    after = _decode_cursor(params.cursor)
    filters = Filters(tenant=caller().tenant, collection=params.collection, where=where)
    page = services().store.list_records(filters, params.status, after, params.limit)
    body = ImageListOut(records=[image_out(r) for r in page.records], next_cursor=_encode_cursor(page.after))
    return jsonify(body.model_dump())


# -- one image --------------------------------------------------------------------------------------

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
    """An image's record: indexing status, caption, title, attributes, collection, tags, models, thumbnail URL."""
    return jsonify(image_out(_record(image_id)).model_dump())


def _merged_attributes(current: dict[str, Value], changes: dict[str, Value | None],
                       schema: AttributeSchema) -> dict[str, Value]:
    merged = dict(current)
    for name, value in changes.items():
        if value is None:
            if name not in merged:
                schema.type_of(name)  # removing an attribute the record lacks: only a declared name is fine
            merged.pop(name, None)  # an attribute no longer declared can still be removed
        else:
            merged[name] = schema.value(name, value)
    return merged


def _patch(body: ImagePatchIn, record: ImageRecord, schema: AttributeSchema) -> RecordPatch | None:
    sent = body.model_fields_set
    if not sent:
        return None
    clear = set()
    texts: dict[str, str | None] = {}
    for name, limit in (("title", metadata.MAX_TITLE), ("description", metadata.MAX_DESCRIPTION)):
        if name in sent:
            texts[name] = metadata.text_field(name, getattr(body, name), limit)
            if texts[name] is None:
                clear.add(name)  # null or blank: removed
    return RecordPatch(
        collection=body.collection if "collection" in sent else None,
        tags=list(metadata.parse_tags(body.tags)) if "tags" in sent else None,
        attributes=_merged_attributes(record.attributes, body.attributes, schema) if "attributes" in sent else None,
        title=texts.get("title"), description=texts.get("description"), clear=frozenset(clear))


@bp.patch("/<image_id>")
@spec.validate(json=ImagePatchIn, tags=TAGS, skip_validation=True,
               path_parameter_descriptions={"image_id": "The image's id."}, resp=Resp(
                   HTTP_200=(ImageOut, "The record as it is now."), HTTP_400=(ErrorOut, "Not a JSON object."),
                   HTTP_404=(ErrorOut, "No such image."),
                   HTTP_422=(ErrorOut, "An invalid field, or an attribute not declared or not of its type."),
                   HTTP_503=(ErrorOut, "Store unavailable."), **AUTH_RESPONSES))
def patch_image(image_id: str):
    """Change an image's collection, tags, attributes, title or description.

    Fields left out stay as they are; `attributes` are merged into the record's (a null value
    removes one); a null `title` or `description` clears it. Vectors and status are untouched
    (nothing is re-embedded), and the id stays the same when the collection changes.
    Attributes are merged from the record as read here: of two PATCHes racing on the same
    record, the later write wins for the whole attribute set.
    """
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise ApiError(400, "malformed_json", "send a JSON object (Content-Type: application/json)")
    body = ImagePatchIn.model_validate(payload)
    record = _record(image_id)
    changes = _patch(body, record, _schema())
    updated = record if changes is None else services().store.patch(image_id, changes)
    if updated is None:  # deleted meanwhile: a patch never recreates it
        raise ApiError(404, "not_found", f"no image with id {image_id!r}")
    return jsonify(image_out(updated).model_dump())


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


def _remove(image_id: str):
    svc = services()
    _record(image_id)  # 404 unless it exists for this tenant
    if not ingest.remove(image_id, store=svc.store, blobs=svc.blobs):
        raise ApiError(404, "not_found", f"no image with id {image_id!r}")
    return "", 204


@bp.delete("/<image_id>")
@spec.validate(tags=TAGS, skip_validation=True, path_parameter_descriptions={"image_id": "The image's id."},
               resp=Resp(HTTP_204=(None, "Deleted."), HTTP_404=(ErrorOut, "No such image."), **AUTH_RESPONSES))
def delete(image_id: str):
    """Delete an image: its record, vectors, original and thumbnail."""
    return _remove(image_id)


@bp.delete("")
@spec.validate(query=DeleteByExternalIdQuery, tags=TAGS, skip_validation=True, resp=Resp(
    HTTP_204=(None, "Deleted."), HTTP_404=(ErrorOut, "No image was uploaded with this external_id to this collection."),
    HTTP_422=(ErrorOut, "Missing or invalid external_id or collection."), **AUTH_RESPONSES))
def delete_by_external_id():
    """Delete the image an upload with this `external_id` into this `collection` made.

    That is the record `POST /v1/images` (or a folder backfill, whose external ids are the file
    paths) replaces for the same pair, found by its id, so it is still found here after a PATCH
    moved it to another collection.
    """
    params = DeleteByExternalIdQuery.model_validate(request.args.to_dict())
    return _remove(upload_id(caller().tenant, params.collection, params.external_id))
