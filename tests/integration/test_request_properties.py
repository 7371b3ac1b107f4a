"""Property tests: whatever a client sends, the API answers with JSON and never a 500."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
search_bodies = st.fixed_dictionaries({}, optional={
    "text": st.none() | st.text(max_size=60) | st.integers(),
    "image": st.none() | st.text(max_size=40) | st.binary(max_size=20).map(lambda b: b.hex()),
    "image_id": st.none() | st.text(max_size=40),
    "mode": st.sampled_from(["image", "caption", "hybrid", "", "IMAGE", "nearest"]) | st.integers(),
    "k": st.integers(min_value=-5, max_value=500) | st.text(max_size=5) | st.floats(allow_nan=True),
    "collection": st.none() | st.text(max_size=20),
    "min_score": st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=5),
}) | json_values


@pytest.fixture(scope="module")
def client(make_app, redis_client):
    return make_app().test_client()


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=search_bodies)
def test_any_search_body_gets_a_json_answer_below_500(client, body):
    response = client.post("/v1/search", data=json.dumps(body, allow_nan=True), content_type="application/json")
    assert response.status_code in (200, 400, 404, 409, 415, 422), response.get_data(as_text=True)
    assert response.is_json
    if response.status_code != 200:
        error = response.get_json()["error"]
        assert error["code"] and error["message"]


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), collection=st.text(max_size=20), tags=st.text(max_size=40),
       external_id=st.text(max_size=20))
def test_any_upload_gets_a_json_answer_below_500(client, data, collection, tags, external_id):
    response = client.post("/v1/images", data={"file": (io.BytesIO(data), "x.bin"), "collection": collection,
                                               "tags": tags, "external_id": external_id},
                           content_type="multipart/form-data")
    assert response.status_code in (202, 400, 413, 415, 422), response.get_data(as_text=True)
    assert response.is_json
