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




def test_search_body_is_described_as_it_is_validated(document):
    """Exactly one query source (oneOf), each example exactly one of its own; every new field named."""
    schemas = document["components"]["schemas"]
    search = schemas["SearchRequest"]
    alternatives = [alt["required"] for alt in search["oneOf"]]
    assert alternatives == [["text"], ["image"], ["image_id"], ["positive"]]
    assert {"positive", "negative", "min_relevance", "cutoff", "explain", "dedup"} <= set(search["properties"])
    example = schemas["ExampleIn"]
    assert [alt["required"] for alt in example["oneOf"]] == [["text"], ["image"], ["image_id"]]
    assert example["properties"]["weight"]["exclusiveMinimum"] == 0
    hit = schemas["SearchHit"]["properties"]
    assert {"relevance", "duplicates", "explain"} <= set(hit)
    similar = document["paths"]["/v1/images/{image_id}/similar"]["get"]
    assert {p["name"] for p in similar["parameters"]} == {"image_id", "k", "threshold"}
    assert {"200", "404", "409", "422"} <= set(similar["responses"])


def test_one_of_matches_the_validator(app):
    """A body the document's oneOf accepts is what the API accepts, and the reverse, for the sources."""
    from jsonschema import Draft202012Validator

    document = app.test_client().get("/openapi.json").get_json()
    schema = {**document["components"]["schemas"]["SearchRequest"], "$defs": document["components"]["schemas"]}
    schema = _rebase(schema)
    validator = Draft202012Validator(schema)
    client = app.test_client()
    for body in ({"text": "a"}, {"image_id": "x"}, {"positive": [{"text": "a"}]}, {"text": None, "image_id": "x"},
                 {}, {"text": "a", "image_id": "x"}, {"text": None}, {"negative": [{"text": "a"}]},
                 {"positive": [{"text": "a"}], "text": "b"}):
        documented = validator.is_valid(body)
        accepted = client.post("/v1/search", json=body).status_code != 422
        assert documented == accepted, body


def _rebase(node):
    """Point ``#/components/schemas/X`` references at ``#/$defs/X`` for a standalone validator."""
    if isinstance(node, dict):
        return {k: (v.replace("#/components/schemas/", "#/$defs/") if k == "$ref" else _rebase(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rebase(v) for v in node]
    return node


def test_key_schemes_are_declared_on_the_v1_routes(document):
    assert set(document["components"]["securitySchemes"]) == {"bearerKey", "headerKey"}
    assert document["paths"]["/v1/search"]["post"]["security"] == [{"bearerKey": []}, {"headerKey": []}, {}]
    assert "security" not in document["paths"]["/v1/events/s3"]["post"]  # a webhook token, not an API key
    assert "security" not in document["paths"]["/healthz"]["get"]


def test_every_app_gets_the_whole_document(make_app):
    """spectree deletes nested models from its registry while generating: a second app once lost them."""
    first = make_app().test_client().get("/openapi.json").get_json()
    second = make_app().test_client().get("/openapi.json").get_json()
    assert first["components"]["schemas"] == second["components"]["schemas"]
    assert "DeadLetter" in second["components"]["schemas"]
    validate(second)
