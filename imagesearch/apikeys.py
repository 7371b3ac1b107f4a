"""API keys: random tokens mapped to a tenant and scopes, stored only as SHA-256 hashes in Redis.

Keys are 256-bit random tokens, so a fast hash is enough (there is nothing to brute-force); the
plaintext is shown once, when the key is created. Redis holds them because every API process
already reaches it (it is the broker) and a new or revoked key then takes effect everywhere at once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass

import redis

from imagesearch.errors import InvalidInput
from imagesearch.redis_state import Keyspace

SCOPES = ("read", "write", "admin")
KEY_PREFIX = "isk_"


@dataclass(frozen=True)
class ApiKey:
    name: str
    tenant: str
    scopes: tuple[str, ...]
    created_at: float
    key_hash: str = ""

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, client: redis.Redis, keys: Keyspace) -> None:
        self.client = client
        self.hash_name = keys.api_keys

    def create(self, name: str, tenant: str, scopes: tuple[str, ...] = ("read", "write")) -> str:
        """Store a new key and return its plaintext (the only time it exists)."""
        unknown = set(scopes) - set(SCOPES)
        if unknown:
            raise InvalidInput(f"unknown scopes: {sorted(unknown)}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        entry = ApiKey(name=name, tenant=tenant, scopes=tuple(scopes), created_at=time.time())
        self.client.hset(self.hash_name, hash_key(key), json.dumps(asdict(entry)))
        return key

    def lookup(self, key: str) -> ApiKey | None:
        raw = self.client.hget(self.hash_name, hash_key(key))
        if raw is None:
            return None
        data = json.loads(raw)
        data["scopes"] = tuple(data["scopes"])
        data["key_hash"] = hash_key(key)
        return ApiKey(**data)

    def list(self) -> list[ApiKey]:
        out = []
        for key_hash, raw in self.client.hgetall(self.hash_name).items():
            data = json.loads(raw)
            data["scopes"] = tuple(data["scopes"])
            data["key_hash"] = key_hash.decode()
            out.append(ApiKey(**data))
        return sorted(out, key=lambda k: k.created_at)

    def revoke(self, key_hash_prefix: str) -> int:
        """Revoke the keys whose hash starts with the given prefix (at least 8 characters)."""
        if len(key_hash_prefix) < 8:
            raise InvalidInput("give at least 8 characters of the key hash")
        matches = [k.key_hash for k in self.list() if k.key_hash.startswith(key_hash_prefix)]
        if matches:
            self.client.hdel(self.hash_name, *matches)
        return len(matches)


class RateLimiter:
    """A fixed one-minute window per caller, shared by every process through Redis."""

    def __init__(self, client: redis.Redis, keys: Keyspace, per_minute: int) -> None:
        self.client = client
        self.keys = keys
        self.per_minute = per_minute

    def hit(self, caller: str) -> tuple[bool, int, int]:
        """Count one request; returns (allowed, remaining, seconds until the window resets)."""
        now = time.time()
        window = int(now // 60)
        key = self.keys.rate_window(caller, window)
        pipe = self.client.pipeline()
        pipe.incr(key)
        pipe.expire(key, 120)
        count = int(pipe.execute()[0])
        reset = 60 - int(now % 60)
        return count <= self.per_minute, max(0, self.per_minute - count), reset
