"""The OpenAPI document is generated from the schemas models, covers every route, and is served
with interactive docs; validation errors keep the API's error format."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from api.openapi import _openapi_path
from schemas.api import ErrorOut, SearchRequest, SearchResponse

UNDOCUMENTED = ("/static", "/docs", "/openapi.json")


@pytest.fixture(scope="module")
def app(make_app):
    return make_app()


@pytest.fixture(scope="module")
def document(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200 and response.is_json
    return response.get_json()


def test_document_is_valid_openapi(document):
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] == "imagesearch API"
    validate(document)


def test_every_route_is_documented(app, document):
    routes = 0
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(UNDOCUMENTED):
            continue
        path = _openapi_path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation = document["paths"].get(path, {}).get(method.lower())
            assert operation is not None, f"{method} {rule.rule} is not in /openapi.json"
            assert operation["summary"] and operation["responses"] and operation["tags"], (method, path)
            routes += 1
    assert routes >= 9
    for path in ("/v1/images", "/v1/images/{image_id}", "/v1/images/{image_id}/thumbnail", "/v1/search",
                 "/healthz", "/readyz", "/metrics", "/"):
        assert path in document["paths"], path


def test_models_come_from_schemas(document):
    schemas = document["components"]["schemas"]
    search = document["paths"]["/v1/search"]["post"]
    content = search["requestBody"]["content"]
    assert content["application/json"]["schema"]["$ref"] == "#/components/schemas/SearchRequest"
    assert "file" in schemas[content["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]["properties"]
    assert set(schemas["SearchRequest"]["properties"]) == set(SearchRequest.model_fields)
    assert schemas["SearchRequest"]["properties"]["k"]["maximum"] == 100
    ok = search["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok == "#/components/schemas/SearchResponse"
    assert set(schemas["SearchResponse"]["properties"]) == set(SearchResponse.model_fields)
    for status in ("400", "404", "409", "415", "422", "503"):
        assert search["responses"][status]["content"]["application/json"]["schema"]["$ref"] == \
            "#/components/schemas/ErrorOut", status
    upload = document["paths"]["/v1/images"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"] and "202" in upload["responses"]
    image = document["paths"]["/v1/images/{image_id}"]["get"]
    assert image["parameters"][0]["name"] == "image_id" and image["parameters"][0]["in"] == "path"
    assert "422" not in image["responses"]  # no body, nothing to validate
    thumb = document["paths"]["/v1/images/{image_id}/thumbnail"]["get"]["responses"]["200"]["content"]
    assert "image/jpeg" in thumb


def test_docs_pages_are_html(app):
    client = app.test_client()
    for path in ("/docs", "/docs/", "/docs/redoc"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.mimetype == "text/html"
        assert "/openapi.json" in response.get_data(as_text=True)
    assert "SwaggerUIBundle" in client.get("/docs").get_data(as_text=True)


def test_validation_errors_are_structured(app):
    response = app.test_client().post("/v1/search", json={"text": "cat", "k": 500, "mode": "nearest"})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request" and error["message"]
    assert {tuple(d["loc"]) for d in error["details"]} == {("k",), ("mode",)}
    ErrorOut.model_validate(response.get_json())  # the documented error model


