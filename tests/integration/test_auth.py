"""API keys and tenancy: the tenant comes from the key; no tenant sees another's images."""

from __future__ import annotations

import io
import subprocess
import sys
import uuid

import pytest

from imagesearch.apikeys import KeyRing, hash_key
from imagesearch.config import ApiSettings, RedisSettings, Settings
from imagesearch.models import get_clip
from imagesearch.pipeline import embed_batch
from imagesearch.redis_state import connect
from tests.support.images import jpeg
from tests.support.paths import ROOT
from tests.support.processes import child_env


def _keyring(settings: Settings) -> KeyRing:
    return KeyRing(connect(settings.redis.url), settings.keys)


@pytest.fixture
def app(make_app, redis_client):
    # Its own queue prefix: its own keys and dead letters, whatever other tests leave in Redis.
    return make_app(api=ApiSettings(auth="keys", rate_limit_per_minute=1000),
                    redis=RedisSettings(namespace=f"auth-{uuid.uuid4().hex[:8]}-"))


@pytest.fixture
def settings(app) -> Settings:
    return app.extensions["imagesearch"].settings


@pytest.fixture
def keys(settings):
    ring = _keyring(settings)
    return {
        "alice": ring.create("alice-app", "alice"),
        "bob": ring.create("bob-app", "bob"),
        "reader": ring.create("alice-ro", "alice", ("read",)),
        "admin": ring.create("ops", "ops", ("read", "write", "admin")),
    }


def _auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def _upload(client, key: str) -> str:
    response = client.post("/v1/images", data={"file": (io.BytesIO(jpeg()), "a.jpg")},
                           content_type="multipart/form-data", headers=_auth(key))
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["id"]


def test_keys_are_required_and_stored_hashed(app, keys, settings, redis_client):
    client = app.test_client()
    response = client.post("/v1/search", json={"text": "x"})
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert client.post("/v1/search", json={"text": "x"}, headers=_auth("isk_forged")).status_code == 401
    assert client.get("/healthz").status_code == 200  # health stays open
    stored = redis_client.hgetall(_keyring(settings).hash_name)
    assert hash_key(keys["alice"]).encode() in stored
    assert all(key.encode() not in b"".join(list(stored) + list(stored.values())) for key in keys.values())


def test_tenants_never_see_each_others_images(app, keys, settings):
    client = app.test_client()
    alice_image = _upload(client, keys["alice"])
    services = app.extensions["imagesearch"]
    embed_batch([alice_image], settings=settings, store=services.store, blobs=services.blobs,
                clip=get_clip(settings))
    # Alice sees her image everywhere; Bob gets 404s and empty results, as if it did not exist.
    assert client.get(f"/v1/images/{alice_image}", headers=_auth(keys["alice"])).status_code == 200
    for path in (f"/v1/images/{alice_image}", f"/v1/images/{alice_image}/thumbnail"):
        assert client.get(path, headers=_auth(keys["bob"])).status_code == 404
    assert client.delete(f"/v1/images/{alice_image}", headers=_auth(keys["bob"])).status_code == 404
    hits = client.post("/v1/search", json={"text": "x"}, headers=_auth(keys["bob"])).get_json()["hits"]
    assert hits == []
    assert client.post("/v1/search", json={"image_id": alice_image}, headers=_auth(keys["bob"])).status_code == 404
    hits = client.post("/v1/search", json={"text": "x"}, headers=_auth(keys["alice"])).get_json()["hits"]
    assert [h["id"] for h in hits] == [alice_image]
    # A request parameter cannot choose the tenant.
    assert client.post("/v1/search", json={"text": "x", "tenant": "alice"},
                       headers=_auth(keys["bob"])).status_code == 422
    assert client.get(f"/v1/images/{alice_image}", headers=_auth(keys["alice"])).status_code == 200


def test_scopes(app, keys):
    client = app.test_client()
    assert client.post("/v1/search", json={"text": "x"}, headers=_auth(keys["reader"])).status_code == 200
    response = client.post("/v1/images", data={"file": (io.BytesIO(jpeg()), "a.jpg")},
                           content_type="multipart/form-data", headers=_auth(keys["reader"]))
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"
    assert client.get("/v1/admin/dead-letters", headers=_auth(keys["alice"])).status_code == 403
    assert client.get("/v1/admin/dead-letters", headers=_auth(keys["admin"])).get_json() == {"dead_letters": []}


def test_rate_limit_is_shared_across_app_instances(make_app, data_dir, redis_client):
    namespace = f"ratelimit-{uuid.uuid4().hex[:8]}-"  # one namespace, two app instances
    apps = [make_app(data_dir=data_dir, api=ApiSettings(auth="keys", rate_limit_per_minute=5),
                     redis=RedisSettings(namespace=namespace)) for _ in range(2)]
    key = _keyring(apps[0].extensions["imagesearch"].settings).create("burst", "t")
    first, second = (app.test_client() for app in apps)
    codes = [(first if i % 2 else second).get("/v1/images/nope", headers=_auth(key)).status_code for i in range(8)]
    assert codes.count(404) == 5 and codes[5:] == [429, 429, 429]
    limited = first.get("/v1/images/nope", headers=_auth(key))
    assert limited.get_json()["error"]["code"] == "rate_limited" and int(limited.headers["Retry-After"]) > 0


@pytest.mark.parametrize("bind_host, auth, is_open", [
    ("127.0.0.1", "auto", True), ("::1", "auto", True), ("localhost", "auto", True),
    ("0.0.0.0", "auto", False), (None, "auto", False), ("0.0.0.0", "open", True), ("127.0.0.1", "keys", False),
])
def test_open_mode_only_on_loopback_by_default(make_app, data_dir, bind_host, auth, is_open):
    client = make_app(data_dir=data_dir, api=ApiSettings(bind_host=bind_host, auth=auth)).test_client()
    status = client.get("/v1/images/nope").status_code
    assert status == (404 if is_open else 401)


def test_keys_cli_create_list_revoke(data_dir, redis_client):
    def cli(*args):
        result = subprocess.run([sys.executable, "-m", "cli", "keys", *args], cwd=ROOT,
                                env=child_env(data_dir), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    key = cli("create", "--tenant", "acme", "--name", "acme-web")
    assert key.startswith("isk_")
    listed = cli("list")
    assert "acme-web" in listed and "tenant=acme" in listed and key not in listed
    assert cli("revoke", hash_key(key)[:12]) == "revoked 1 key(s)"
    assert _keyring(Settings()).lookup(key) is None
