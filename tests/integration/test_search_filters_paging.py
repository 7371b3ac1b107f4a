"""Filters and paging through the real API (embedded store, Redis, tiny CLIP): a filtered search
returns k hits whenever k records match and every hit matches; pages concatenate to the deep
query with no duplicates, in every mode; tokens are bound to their query."""

from __future__ import annotations

import numpy as np
import pytest

from imagesearch.filtering import parse_where
from tests.support.search_api import put_indexed, search

ATTRIBUTES = "brand:keyword,price:number,in_stock:boolean,released:date"
N = 60


@pytest.fixture(scope="module")
def app(make_app, redis_client):
    app = make_app(ingest={"attributes": ATTRIBUTES})
    svc = app.extensions["imagesearch"]
    clip, store = svc.clip, svc.store
    rng = np.random.default_rng(7)
    texts = clip.encode_texts([f"a picture of thing {i}" for i in range(N)])
    for i in range(N):
        v = rng.normal(size=texts.shape[1]).astype(np.float32)
        put_indexed(store, clip.identity, f"p{i:02d}", v / np.linalg.norm(v),
                    caption=f"a picture of thing {i}", caption_vector=texts[i],
                    tags=["even" if i % 2 == 0 else "odd", f"t{i % 5}"], title=f"product {i}",
                    created_at=1_700_000_000.0 + i * 86400,
                    attributes={"brand": ["acme", "zeta", "ohm"][i % 3], "price": float(i),
                                "in_stock": i % 4 != 0, "released": 1_600_000_000.0 + i})
    return app


FILTERS = [
    {"tags": {"any": ["even"]}},
    {"tags": {"all": ["odd", "t3"]}},
    {"attributes": {"brand": {"in": ["acme", "ohm"]}, "price": {"range": {"gte": 10, "lt": 40}}}},
    {"attributes": {"in_stock": {"eq": False}}},
    {"created_at": {"gte": "2023-11-20T00:00:00Z"}, "attributes": {"released": {"range": {"lt": 1_600_000_030}}}},
    {"attributes": {"brand": {"exists": True}}, "tags": {"any": ["t1", "t2"]}},
]


@pytest.mark.parametrize("where", FILTERS)
@pytest.mark.parametrize("mode", ["image", "caption", "hybrid"])
def test_filtered_search_returns_k_matching_hits(app, client, where, mode):
    svc = app.extensions["imagesearch"]
    parsed = parse_where(where, svc.settings.ingest.attribute_schema())
    matching = {r.id for r in svc.store.iter_records() if parsed.matches(r)}
    assert matching, where
    k = 5
    hits = search(client, text="a picture of thing 3", mode=mode, k=k, filter=where)["hits"]
    assert len(hits) == min(k, len(matching))
    assert {h["id"] for h in hits} <= matching


def test_an_undeclared_attribute_or_a_wrong_type_is_422_naming_it(client):
    error = search(client, 422, text="x", filter={"attributes": {"colour": {"eq": "red"}}})["error"]
    assert "colour" in error["message"]
    error = search(client, 422, text="x", filter={"attributes": {"price": {"eq": "cheap"}}})["error"]
    assert "price" in error["message"]
    error = search(client, 422, text="x", filter={"attributes": {"brand": {"range": {"gte": 1}}}})["error"]
    assert "brand" in error["message"]
    assert search(client, 422, text="x", filter={"colour": 1})["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("mode", ["image", "caption", "hybrid"])
def test_pages_concatenate_to_the_deep_query(client, mode):
    deep = [h["id"] for h in search(client, text="a picture of thing 9", mode=mode, k=100)["hits"]]
    pages: list[str] = []
    token = None
    for _ in range(20):
        body = {"text": "a picture of thing 9", "mode": mode, "k": 7}
        if token:
            body["page_token"] = token
        page = search(client, **body)
        pages += [h["id"] for h in page["hits"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert len(pages) == len(set(pages)) == len(deep) and pages == deep


def test_a_token_is_bound_to_its_query(client):
    first = search(client, text="a picture of thing 1", k=5)
    token = first["next_page_token"]
    assert token
    again = search(client, text="a picture of thing 1", k=10, page_token=token)  # k may change
    assert {h["id"] for h in again["hits"]}.isdisjoint({h["id"] for h in first["hits"]})
    error = search(client, 422, text="another query", k=5, page_token=token)["error"]
    assert error["code"] == "invalid_page_token" and "another query" in error["message"]
    assert search(client, 422, text="x", page_token="not-a-token")["error"]["code"] == "invalid_page_token"
