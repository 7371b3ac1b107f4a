"""The worker's pool refuses its first ``TEST_POOL_REFUSALS`` batches, as a pool that cannot take a
job raises from ``apply_async``; loaded after ``tests.support.slow_batches`` with
``celery worker -I tests.support.slow_batches,tests.support.flaky_pool``.

Only batches (celery-batches' ``apply_batches_task``) are refused; the worker's other pool jobs run.
"""

from __future__ import annotations

import os
from typing import Any

from celery.concurrency.base import BasePool
from celery_batches.trace import apply_batches_task

_real_apply_async = BasePool.apply_async
_refusals = int(os.environ.get("TEST_POOL_REFUSALS", "1"))


def _apply_async(self: BasePool, target: Any, *args: Any, **kwargs: Any) -> Any:
    global _refusals
    if target is apply_batches_task and _refusals > 0:
        _refusals -= 1
        raise RuntimeError("batch refused by tests.support.flaky_pool")
    return _real_apply_async(self, target, *args, **kwargs)


BasePool.apply_async = _apply_async
