"""A small HTTP client for the API, used by the CLI, the demo and the evaluation."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from imagesearch.dev.procs import wait_until


@dataclass
class ApiClient:
    base: str
    timeout: float = 60.0
    session: requests.Session = field(default_factory=requests.Session)

    def upload(self, data: bytes, filename: str, **fields: str) -> str:
        response = self.session.post(f"{self.base}/v1/images", files={"file": (filename, data)}, data=fields,
                                     timeout=self.timeout)
        response.raise_for_status()
        return response.json()["id"]

    def image(self, image_id: str) -> dict:
        response = self.session.get(f"{self.base}/v1/images/{image_id}", timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def search(self, **body) -> tuple[dict, float]:
        """The response body and the client-side latency in milliseconds."""
        started = time.perf_counter()
        response = self.session.post(f"{self.base}/v1/search", json=body, timeout=self.timeout)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"search failed ({response.status_code}): {response.text}")
        return response.json(), elapsed

    def wait_settled(self, ids: list[str], timeout: float = 1800,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, dict]:
        """Poll until every image is failed or captioned; ``progress(done, total)`` is told as it goes."""
        states: dict[str, dict] = {}

        def settled() -> bool:
            for image_id in ids:
                state = states.get(image_id)
                if state is None or not _final(state):
                    states[image_id] = self.image(image_id)
            done = sum(_final(s) for s in states.values())
            if progress:
                progress(done, len(ids))
            return done == len(ids)

        wait_until(settled, timeout, 1.0, "indexing")
        return states


def _final(state: dict) -> bool:
    return state["status"] == "failed" or state["caption_status"] in ("done", "failed")
