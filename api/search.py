"""Search by text, uploaded image or stored image id."""

from __future__ import annotations

import base64
import logging
import time

from flask import Blueprint, jsonify, request

from api.auth import caller
from api.context import services
from api.errors import ApiError
from api.images import thumbnail_url
from api.openapi import Resp, SearchForm, spec
from imagesearch import metrics
from imagesearch.search import Query
from schemas import SearchHit, SearchRequest, SearchResponse
from schemas.api import ErrorOut

bp = Blueprint("search", __name__, url_prefix="/v1")
log = logging.getLogger(__name__)


def _parse() -> SearchRequest:
    if request.mimetype == "multipart/form-data":
        fields = {k: v for k, v in request.form.items() if v != ""}
        file = request.files.get("file")
        if file is not None:
            data = file.read()
            if not data:
                raise ApiError(400, "empty_file", "the uploaded query image is empty")
            fields["image"] = base64.b64encode(data).decode()
        return SearchRequest.model_validate(fields)
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise ApiError(400, "malformed_json", "send a JSON object (Content-Type: application/json) "
                                              "or multipart/form-data")
    return SearchRequest.model_validate(payload)


@bp.post("/search")
@spec.validate(json=SearchRequest, form=SearchForm, tags=["search"], skip_validation=True, resp=Resp(
    HTTP_200=SearchResponse, HTTP_400=(ErrorOut, "Not JSON or multipart, malformed JSON, or an empty file."),
    HTTP_404=(ErrorOut, "image_id names no image."), HTTP_409=(ErrorOut, "image_id is not indexed yet."),
    HTTP_415=(ErrorOut, "The query image is not an image."), HTTP_503=(ErrorOut, "Store or model unavailable.")))
def search():
    """Search by text, by an uploaded image or by an indexed image's id.

    Send JSON, or `multipart/form-data` with the query image as `file`. Give exactly one of
    `text`, `image` (base64, JSON only), `image_id` or `file`. Modes: `image` compares with CLIP
    image vectors, `caption` with the CLIP vectors of generated captions, `hybrid` fuses both with
    keyword (BM25) matches on captions by reciprocal rank fusion.
    """
    started = time.perf_counter()
    req = _parse()
    try:
        image = req.image_bytes()
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    svc = services()
    result = svc.searcher.search(Query(text=req.text, image=image, image_id=req.image_id, mode=req.mode, k=req.k,
                                       collection=req.collection, tenant=caller().tenant,
                                       min_score=req.min_score))
    hits = [
        SearchHit(id=h.record.id, score=h.score, caption=h.record.caption, source=h.record.source,
                  collection=h.record.collection, external_id=h.record.external_id, tags=h.record.tags,
                  thumbnail_url=thumbnail_url(h.record))
        for h in result.hits
    ]
    body = SearchResponse(hits=hits, mode=req.mode, model=svc.clip.identity, took_ms=round(result.took_ms, 2))
    seconds = time.perf_counter() - started
    metrics.observe_search(req.mode, seconds)
    log.info("search", extra={"mode": req.mode, "k": req.k, "hits": len(hits), "took_ms": round(seconds * 1000, 2),
                              "query": "text" if req.text else "image_id" if req.image_id else "image"})
    return jsonify(body.model_dump())
