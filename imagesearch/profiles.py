"""Search profiles: the fusion and the relevance calibrations fitted for one pair of models.

``imagesearch eval --tune`` fits a profile on a labelled set and saves it in Redis under the
identities of the CLIP model and the captioner that produced the vectors it was fitted on, so a
profile can never be applied to another model's scores. Every API process reads it from there
(at most once per ``search.profile_refresh_s``), so a new profile reaches every process without a
restart, and Redis being down keeps the last profile read rather than failing searches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from imagesearch.fusion import FusionConfig
from imagesearch.redis_state import Keyspace
from imagesearch.relevance import Calibration
from imagesearch.vocab import SearchMode

log = logging.getLogger(__name__)
FORMAT = 1


@dataclass(frozen=True)
class SearchProfile:
    clip: str
    captioner: str
    fusion: FusionConfig
    calibration: Mapping[SearchMode, Calibration] = field(default_factory=dict)
    fitted: Mapping[str, Any] = field(default_factory=dict)  # dataset, queries, time, held-out metrics

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "clip": self.clip, "captioner": self.captioner, "fusion": self.fusion.to_json(),
                "calibration": {str(m): c.to_json() for m, c in self.calibration.items()},
                "fitted": dict(self.fitted)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchProfile:
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown search profile format {data.get('format')!r} (this version reads {FORMAT})")
        return cls(str(data["clip"]), str(data["captioner"]), FusionConfig.from_json(data["fusion"]),
                   {SearchMode(m): Calibration.from_json(c) for m, c in data.get("calibration", {}).items()},
                   dict(data.get("fitted", {})))

    def summary(self) -> dict[str, Any]:
        """What ``/readyz`` and ``imagesearch status`` show."""
        return {"clip": self.clip, "captioner": self.captioner, "fusion": self.fusion.to_json(),
                "calibrated_modes": sorted(str(m) for m in self.calibration),
                **{k: self.fitted[k] for k in ("dataset", "fitted_at", "queries") if k in self.fitted}}


def profile_digest(clip: str, captioner: str) -> str:
    return hashlib.sha256(f"{clip}\n{captioner}".encode()).hexdigest()[:16]


class ProfileStore:
    def __init__(self, client: redis.Redis, keys: Keyspace, refresh_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.keys = keys
        self.refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[float, bytes | None, SearchProfile | None]] = {}

    def _key(self, clip: str, captioner: str) -> str:
        return self.keys.search_profile(profile_digest(clip, captioner))

    def save(self, profile: SearchProfile) -> None:
        self.client.set(self._key(profile.clip, profile.captioner), json.dumps(profile.to_json()))

    def delete(self, clip: str, captioner: str) -> bool:
        return bool(self.client.delete(self._key(clip, captioner)))

    def all(self) -> list[SearchProfile]:
        """Every saved profile (one per pair of models tuned for), for ``imagesearch status``."""
        out = []
        for key in sorted(self.client.scan_iter(match=self.keys.search_profile("*"), count=100)):
            raw = self.client.get(key)
            if raw is not None:
                try:
                    out.append(SearchProfile.from_json(json.loads(raw)))
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("ignoring an unreadable search profile %s: %s", key, exc)
        return out

    def load(self, clip: str, captioner: str) -> SearchProfile | None:
        raw = self.client.get(self._key(clip, captioner))
        return _parse(raw, clip, captioner)

    def current(self, clip: str, captioner: str) -> SearchProfile | None:
        """The profile for these identities, re-read at most every ``refresh_s``."""
        key = self._key(clip, captioner)
        now = self._clock()
        with self._lock:
            read_at, raw, profile = self._cached.get(key, (float("-inf"), None, None))
            if now - read_at < self.refresh_s:
                return profile
        try:
            fresh = self.client.get(key)
        except redis.RedisError as exc:
            log.warning("cannot read the search profile, keeping the last one read: %s", exc)
            fresh = raw
        if fresh != raw or key not in self._cached:
            profile = _parse(fresh, clip, captioner)
        with self._lock:
            self._cached[key] = (now, fresh, profile)
        return profile


def _parse(raw: bytes | None, clip: str, captioner: str) -> SearchProfile | None:
    if raw is None:
        return None
    try:
        profile = SearchProfile.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        log.error("ignoring an unreadable search profile: %s", exc)
        return None
    if (profile.clip, profile.captioner) != (clip, captioner):
        return None  # a digest collision cannot apply another model's profile
    return profile
