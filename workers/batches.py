"""celery-batches, made safe for a worker process that dies mid-batch.

``Batches.flush`` acknowledges late requests only when the pool reports success; when the child
process is killed (OOM, segfault, SIGKILL) nothing happens, and the messages stay unacknowledged
in the parent until it restarts or the Redis visibility timeout passes. Here the pool's error
callback rejects them with requeue, as Celery does for ordinary tasks with
``task_reject_on_worker_lost``, so they go back to the queue at once. And a task that raised
instead of returning True has its messages requeued, not acknowledged as if done.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from billiard.exceptions import WorkerLostError
from celery.utils.log import get_logger
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

log = get_logger(__name__)


class ReliableBatches(Batches):
    abstract = True

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Any:
        # The consumer builds its strategies again after a broker reconnect, on a cleared timer.
        # celery-batches armed its flush timer on the old one and, still holding that entry, would
        # never arm another: a part-filled batch then waited for more messages, possibly forever
        # (seen after a Redis restart: 6 messages held for 80 s, until the test gave up).
        if self._tref is not None:
            self._tref.cancel()
            self._tref = None
        return super().Strategy(task, app, consumer)

    def flush(self, requests: Collection[Request]) -> Any:
        requests = list(requests)
        late = [r for r in requests if r.task.acks_late]
        early = [r for r in requests if not r.task.acks_late]
        serializable = ([SimpleRequest.from_request(r) for r in requests],)

        def on_accepted(pid: int, time_accepted: float) -> None:
            for req in early:
                req.acknowledge()

        def on_return(result: Any) -> None:
            # The task returns True once every message is accounted for; anything else (it raised,
            # or said so) sends the messages back to the queue rather than dropping them.
            for req in late:
                if result is True:
                    req.acknowledge()
                else:
                    req.reject(requeue=True)

        def on_error(exc_info: Any) -> None:
            exc = exc_info
            for attribute in ("exception", "exc"):  # ExceptionInfo / ExceptionWithTraceback wrappers
                exc = getattr(exc, attribute, exc)
            lost = isinstance(exc, WorkerLostError)
            log.error("batch of %d %s: %s %r; %s", len(requests), self.name, type(exc_info).__name__, exc,
                      "requeued" if lost else "acknowledged")
            for req in late:
                if lost:
                    req.reject(requeue=True)
                else:
                    req.acknowledge()

        return self._pool.apply_async(apply_batches_task, (self, serializable, 0, None),
                                      accept_callback=on_accepted, callback=on_return, error_callback=on_error)
