"""Search by text, images, indexed images' ids or several weighted examples; near-duplicates."""

from __future__ import annotations

import base64
import logging
import time

from flask import Blueprint, jsonify, request
from pydantic import BaseModel, Field

from api import paging
from api.auth import AUTH_RESPONSES, caller
from api.context import services
from api.errors import ApiError
from api.images import thumbnail_url
from api.openapi import Resp, SearchForm, spec
from imagesearch import metrics
from imagesearch.filtering import parse_where
from imagesearch.search import Example, Hit, Query, Result
from imagesearch.vocab import RankedList
from schemas import SearchHit, SearchRequest, SearchResponse
from schemas.api import MAX_K, CutoffOut, ErrorOut, ExampleIn, FusionOut, HitExplain, ListEntry, SimilarOut

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


def _image(holder: SearchRequest | ExampleIn, where: str) -> bytes | None:
    try:
        return holder.image_bytes()
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"{where}: {exc}") from None


def _examples(items: list[ExampleIn], where: str) -> tuple[Example, ...]:
    return tuple(Example(e.text, _image(e, f"{where}[{i}].image"), e.image_id, e.weight) for i, e in enumerate(items))


def to_hit(hit: Hit) -> SearchHit:
    explain = None
    if hit.parts is not None:
        lists = {name: (ListEntry(rank=e.rank, score=e.score) if (e := hit.parts.get(name)) else None)
                 for name in RankedList if name in hit.parts or len(hit.parts) > 1}
        explain = HitExplain(fused=hit.score, lists=lists)
    r = hit.record
    return SearchHit(id=r.id, score=hit.score, relevance=hit.relevance, caption=r.caption, source=r.source,
                     collection=r.collection, external_id=r.external_id, tags=r.tags, title=r.title,
                     attributes=r.attributes, created_at=r.created_at, taken_at=r.taken_at,
                     thumbnail_url=thumbnail_url(r), duplicates=list(hit.duplicates), explain=explain)


def _response(req: SearchRequest, result: Result, model: str) -> SearchResponse:
    fusion = None
    if result.fusion is not None:
        f = result.fusion
        fusion = FusionOut(method=f.method, weights={n: f.weight(n) for n in RankedList}, depth=f.depth,
                           rrf_k=f.rrf_k, tuned=result.tuned)
    cutoff = None
    if result.cutoff is not None:
        cutoff = CutoffOut(method=result.cutoff.method, kept=result.cutoff.kept, of=result.cutoff.of)
    return SearchResponse(hits=[to_hit(h) for h in result.hits], mode=req.mode, model=model,
                          took_ms=round(result.took_ms, 2), calibrated=result.calibrated, cutoff=cutoff, fusion=fusion)


@bp.post("/search")
@spec.validate(json=SearchRequest, form=SearchForm, tags=["search"], skip_validation=True, resp=Resp(
    HTTP_200=SearchResponse, HTTP_400=(ErrorOut, "Not JSON or multipart, malformed JSON, or an empty file."),
    HTTP_404=(ErrorOut, "An image_id names no image."),
    HTTP_409=(ErrorOut, "An image_id is not indexed yet, or min_relevance without a calibration."),
    HTTP_415=(ErrorOut, "A query image is not an image."), HTTP_503=(ErrorOut, "Store or model unavailable."),
    **AUTH_RESPONSES))
def search():
    """Search by text, by an uploaded image, by an indexed image's id, or by weighted examples.

    Send JSON, or `multipart/form-data` with the query image as `file`. Give exactly one of
    `text`, `image` (base64, JSON only), `image_id`, `positive` (a list of examples) or `file`;
    `negative` examples are subtracted from it. Modes: `image` compares with CLIP image vectors,
    `caption` with the CLIP vectors of generated captions, `hybrid` fuses both with keyword (BM25)
    matches on captions, titles and descriptions (weighted, `fusion` in the response says how).
    `relevance` is a calibrated probability when `imagesearch eval --tune` has fitted one for these
    models.
    """
    started = time.perf_counter()
    req = _parse()
    svc = services()
    tenant = caller().tenant
    where = parse_where(req.filter.as_json() if req.filter else None, svc.settings.ingest.attribute_schema())
    offset, depth = paging.read(req.page_token, req, tenant) if req.page_token else (0, None)
    query = Query(text=req.text, image=_image(req, "image"), image_id=req.image_id,
                  positive=_examples(req.positive or [], "positive"), negative=_examples(req.negative, "negative"),
                  mode=req.mode, k=req.k, collection=req.collection, tenant=tenant, min_score=req.min_score,
                  min_relevance=req.min_relevance, cutoff=req.cutoff, explain=req.explain, dedup=req.dedup,
                  where=where, offset=offset, depth=depth)
    result = svc.searcher.search(query)
    body = _response(req, result, svc.clip.identity)
    if result.more:
        body.next_page_token = paging.write(req, tenant, offset + len(result.hits), result.depth)
    seconds = time.perf_counter() - started
    metrics.observe_search(req.mode, seconds)
    log.info("search", extra={"mode": req.mode, "k": req.k, "hits": len(body.hits),
                              "took_ms": round(seconds * 1000, 2), "query": _kind(req)})
    return jsonify(body.model_dump())


def _kind(req: SearchRequest) -> str:
    if req.positive is not None or req.negative:
        return "examples"
    return "text" if req.text else "image_id" if req.image_id else "image"


class SimilarQuery(BaseModel):
    k: int = Field(default=10, ge=1, le=MAX_K)
    threshold: float | None = Field(
        default=None, ge=-1.0, le=1.0,
        description="Image-to-image cosine at or above which an image counts as a near-duplicate "
                    "(default: IMAGESEARCH_DUPLICATE_THRESHOLD).")


@bp.get("/images/<image_id>/similar")
@spec.validate(query=SimilarQuery, tags=["search"], skip_validation=True, resp=Resp(
    HTTP_200=SimilarOut, HTTP_404=(ErrorOut, "No such image."), HTTP_409=(ErrorOut, "The image is not indexed yet."),
    HTTP_422=(ErrorOut, "Invalid k or threshold."), HTTP_503=(ErrorOut, "Store or model unavailable."),
    **AUTH_RESPONSES))
def similar(image_id: str):
    """Near-duplicates of an indexed image: its image vector's neighbours at or above a cosine threshold."""
    params = SimilarQuery.model_validate(request.args.to_dict())
    svc = services()
    threshold = svc.settings.search.duplicate_threshold if params.threshold is None else params.threshold
    hits = svc.searcher.similar(image_id, caller().tenant, params.k, threshold)
    return jsonify(SimilarOut(id=image_id, threshold=threshold, hits=[to_hit(h) for h in hits]).model_dump())
