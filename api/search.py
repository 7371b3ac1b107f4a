"""Search by text, uploaded image or stored image id."""

from __future__ import annotations

import base64

from flask import Blueprint, jsonify, request

from api.context import services
from api.errors import ApiError
from api.images import thumbnail_url
from imagesearch.search import Query
from schemas import SearchHit, SearchRequest, SearchResponse

bp = Blueprint("search", __name__, url_prefix="/v1")


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
def search():
    req = _parse()
    try:
        image = req.image_bytes()
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    svc = services()
    result = svc.searcher.search(Query(text=req.text, image=image, image_id=req.image_id, mode=req.mode, k=req.k,
                                       collection=req.collection, min_score=req.min_score))
    hits = [
        SearchHit(id=h.record.id, score=h.score, caption=h.record.caption, source=h.record.source,
                  collection=h.record.collection, external_id=h.record.external_id, tags=h.record.tags,
                  thumbnail_url=thumbnail_url(h.record))
        for h in result.hits
    ]
    body = SearchResponse(hits=hits, mode=req.mode, model=svc.clip.identity, took_ms=round(result.took_ms, 2))
    return jsonify(body.model_dump())
