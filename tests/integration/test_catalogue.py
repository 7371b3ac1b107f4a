"""A generated catalogue loaded by a folder backfill with sidecars (IMAGESEARCH_ATTRIBUTES set in the
environment), then filtered, paged, edited and deleted by external_id through the API: the real
app, the embedded store, the tiny models for the few images embedded."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from imagesearch.dev.products import ATTRIBUTES, Product, products, write_catalogue
from imagesearch.models import get_clip
from imagesearch.pipeline import embed_batch
from imagesearch.records import upload_id
from imagesearch.s3.backfill import run_backfill
from imagesearch.vocab import Stage
from tests.support.paths import ROOT
from tests.support.processes import child_env

N = 100
SEED = 7
COLLECTION = "catalogue"


def test_products_are_deterministic_and_carry_mixed_titles_and_every_attribute():
    first, again = products(40, SEED), products(40, SEED)
    assert first == again and products(40, SEED + 1) != first
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in p.title) and any(ch.isascii() and ch.isalpha()
                                                                          for ch in p.title) for p in first)
    assert {type(v) for p in first for v in p.attributes().values()} == {str, float, bool}
    assert len({p.category for p in first}) > 4 and {p.in_stock for p in first} == {True, False}


@pytest.fixture
def loaded(make_app, tmp_path, monkeypatch):
    folder = tmp_path / "catalogue"
    catalogue = write_catalogue(folder, N, SEED)
    monkeypatch.setenv("IMAGESEARCH_ATTRIBUTES", ATTRIBUTES)  # as an operator sets it, read by Settings()
    app = make_app()
    svc = app.extensions["imagesearch"]
    assert svc.settings.ingest.attributes == ATTRIBUTES
    stats = run_backfill(str(folder), settings=svc.settings, store=svc.store, blobs=svc.blobs,
                         enqueue=svc.enqueue_embed, event_log=svc.event_log, collection=COLLECTION)
    assert (stats.listed, stats.queued, stats.failed, stats.skipped) == (N, N, 0, 0)  # sidecars are not items
    # A few are embedded by the real pipeline, so statuses differ and PATCH can be seen to leave vectors alone.
    embedded = [upload_id("default", COLLECTION, p.file_name) for p in catalogue[:10]]
    assert sorted(embed_batch(embedded, settings=svc.settings, store=svc.store, blobs=svc.blobs,
                              clip=get_clip(svc.settings)).done) == sorted(embedded)
    return app, catalogue, embedded


def _id(product: Product) -> str:
    return upload_id("default", COLLECTION, product.file_name)


def _epoch(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


def _all_ids(client, query: str, limit: int = 1000) -> list[str]:
    ids, cursor = [], None
    while True:
        response = client.get(f"/v1/images?collection={COLLECTION}&limit={limit}{query}"
                              + (f"&cursor={cursor}" if cursor else ""))
        assert response.status_code == 200, response.get_data(as_text=True)
        ids += [r["id"] for r in response.get_json()["records"]]
        cursor = response.get_json()["next_cursor"]
        if cursor is None:
            return ids


def test_every_product_is_listed_with_its_sidecar(loaded):
    app, catalogue, _ = loaded
    client = app.test_client()
    records = client.get(f"/v1/images?collection={COLLECTION}&limit=1000").get_json()["records"]
    assert len(records) == N and {r["id"] for r in records} == {_id(p) for p in catalogue}
    by_id = {r["id"]: r for r in records}
    for product in catalogue:
        record = by_id[_id(product)]
        assert (record["title"], record["description"], record["tags"]) == (product.title, product.description,
                                                                          product.tags)
        assert record["external_id"] == product.file_name
        assert record["attributes"] == {"brand": product.brand, "price": product.price,
                                        "in_stock": product.in_stock, "released": _epoch(product.released)}


def test_filtered_listing_matches_the_catalogue_and_pages_concatenate(loaded):
    app, catalogue, embedded = loaded
    client = app.test_client()
    where = {"attributes": {"price": {"range": {"gte": 50, "lt": 300}}, "in_stock": {"eq": True},
                            "brand": {"in": ["Aurora", "青山"]}, "released": {"range": {"gte": "2022-01-01"}}}}
    expected = {_id(p) for p in catalogue if 50 <= p.price < 300 and p.in_stock and p.brand in ("Aurora", "青山")
                and p.released >= "2022-01-01"}
    assert expected  # the seed gives some
    one_page = _all_ids(client, "&filter=" + quote(json.dumps(where)))
    assert set(one_page) == expected and len(one_page) == len(expected)
    assert _all_ids(client, "&filter=" + quote(json.dumps(where)), limit=3) == one_page  # same order, no duplicate
    dresses_or_mugs = {_id(p) for p in catalogue if {"dress", "mug"} & set(p.tags)}
    assert set(_all_ids(client, "&tag=dress&tag=mug", limit=7)) == dresses_or_mugs
    assert set(_all_ids(client, "&status=indexed")) == set(embedded)


def test_patch_and_delete_by_external_id_through_the_api(loaded):
    app, catalogue, embedded = loaded
    client = app.test_client()
    svc = app.extensions["imagesearch"]
    product = catalogue[0]  # one of the embedded ones
    image_id = _id(product)
    assert image_id in embedded
    before = svc.store.get(image_id)
    sent = len(svc.queue.sent[Stage.EMBED])
    response = client.patch(f"/v1/images/{image_id}", json={
        "title": "女士连衣裙 Sale", "attributes": {"price": 1.0, "in_stock": False}, "tags": ["sale"]})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["attributes"]["brand"] == product.brand and body["attributes"]["price"] == 1.0
    assert body["status"] == "indexed" and svc.store.get(image_id).content_hash == before.content_hash
    assert len(svc.queue.sent[Stage.EMBED]) == sent  # not re-embedded
    cheap = {"attributes": {"price": {"range": {"lt": 2}}}}
    assert _all_ids(client, "&filter=" + quote(json.dumps(cheap))) == [image_id]
    assert _all_ids(client, "&tag=sale") == [image_id]

    gone = catalogue[1]
    delete = f"/v1/images?collection={COLLECTION}&external_id={quote(gone.file_name)}"
    assert client.delete(delete).status_code == 204
    assert client.get(f"/v1/images/{_id(gone)}").status_code == 404
    assert _id(gone) not in _all_ids(client, "")
    assert client.delete(delete).status_code == 404
    assert client.delete(f"/v1/images?collection=elsewhere&external_id={quote(catalogue[2].file_name)}"
                         ).status_code == 404  # another collection: another upload


def test_the_dev_products_command_writes_a_catalogue(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cli", "dev", "products", str(tmp_path / "cat"), "--n", "3"],
                            cwd=ROOT, env=child_env(tmp_path / "data"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "cat").iterdir()) == [
        "p00000.jpg", "p00000.jpg.json", "p00001.jpg", "p00001.jpg.json", "p00002.jpg", "p00002.jpg.json"]
    assert json.loads((tmp_path / "cat" / "p00001.jpg.json").read_text(encoding="utf-8")) == products(3)[1].sidecar()
    assert "IMAGESEARCH_ATTRIBUTES=" in result.stdout
