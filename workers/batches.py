"""celery-batches, made safe for a worker process that dies mid-batch, and kept full under a backlog.

``Batches.flush`` acknowledges late requests only when the pool reports success; when the child
process is killed (OOM, segfault, SIGKILL) nothing happens, and the messages stay unacknowledged
in the parent until it restarts or the Redis visibility timeout passes. Here the pool's error
callback rejects them with requeue, as Celery does for ordinary tasks with
``task_reject_on_worker_lost``, so they go back to the queue at once. And a task that raised
instead of returning True has its messages requeued, not acknowledged as if done.

celery-batches also flushes its buffer on every ``flush_interval`` tick, whether or not the pool
can start the batch: under a backlog each tick queued whatever had arrived since the last one, and
a caption worker whose batches of 8 took seconds ran batches of 2.6 images. Here a tick that finds
every pool process with a batch (running or queued) leaves a partial buffer to fill up to
``flush_every`` (a full buffer still flushes at once), and when a batch comes back (returned,
raised or its process lost) whatever is buffered goes to the pool if a process is free. An idle
worker still runs a lone message after ``flush_interval``.

A message with an ETA (a retry sent with ``countdown=``) waits on the consumer's timer, outside the
buffer, and raises the consumer's QoS by one until due, as Celery's own ETA tasks do: in
celery-batches' buffer it took a prefetch slot for its whole countdown, and a prefetch's worth of
retries stopped the worker fetching new uploads. The raises stop at Celery's
``worker_eta_task_limit`` (past it a held message raises nothing, and gives nothing back).

A broker reconnect brings a fresh QoS that owes held messages nothing: their raise is forgotten,
not given back. It also clears the consumer's timer: the flush timer is armed again on the new one
when anything is buffered, so a part-filled batch does not wait for the next message. Where Redis
stayed up, kombu restores every unacknowledged message as the old channel closes, and they come
again while the in-memory copies (buffered or held) are still here: those copies are remembered as
stale, and one whose message arrives again is dropped for the new copy, which the live channel can
acknowledge. A stale copy whose message never comes again (Redis lost it) still runs: it may be
the only one left. A batch the pool refused (``apply_async`` raised) goes back into the buffer, and
one killed for its hard time limit is requeued as a lost process's is (the delivery ledger in
workers/tasks.py then runs its images alone).

The pool's callbacks run in the consumer's event loop (prefork) or inline (solo), the thread
that buffers messages and fires the timer, so the buffer and the count of batches in the pool
need no lock; nor do the messages held for their ETA.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from itertools import count
from time import monotonic
from typing import Any

from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery.utils.log import get_logger
from celery.utils.time import timezone
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest, consume_queue
from celery_batches.trace import apply_batches_task
from kombu.asynchronous.timer import to_timestamp

log = get_logger(__name__)


@dataclass
class _Held:
    """A message waiting on the consumer's timer for its ETA."""

    request: Request
    eta: float  # on the timer's (monotonic) clock
    entry: Any  # its timer entry
    qos: Any  # the consumer's QoS it raised (kombu.common.QoS), or None
    raised: int  # by how much: 0 where the QoS was capped, disabled or not there yet


class ReliableBatches(Batches):
    abstract = True

    def __init__(self) -> None:
        super().__init__()
        # One token per batch handed to the pool whose callback has not come back yet. Tokens rather
        # than a counter, so forgetting them (Strategy) cannot be undone by a late callback.
        self._in_pool: set[int] = set()
        self._tokens = count(1)
        self._held: dict[int, _Held] = {}
        self._consumer: Any = None
        # By task id, the in-memory copies of messages delivered on a channel since closed (see
        # Strategy): dropped when their message arrives again, run if it never does.
        self._stale: dict[str, Request] = {}

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Any:
        # The consumer builds its strategies again after a broker reconnect, on a cleared timer.
        # celery-batches armed its flush timer on the old one and, still holding that entry, would
        # never arm another: a part-filled batch then waited for more messages, possibly forever
        # (seen after a Redis restart: 6 messages held for 80 s, until the test gave up).
        if self._tref is not None:
            self._tref.cancel()
            self._tref = None
        # Likewise a batch whose callback was lost across the restart must not hold partial
        # batches back for good: the worst case is now one batch flushed early.
        self._in_pool.clear()
        self._consumer = consumer
        # Messages held for their ETA lost their timer entries with the cleared timer (a reload
        # keeps the timer: cancelling first runs none twice). Their QoS raise stays on the old QoS,
        # so _release leaves the new one alone.
        for token, held in self._held.items():
            held.entry.cancel()
            held.entry = self._arm(token, held.eta)
        # Whatever is buffered would otherwise wait for the next message to arm the flush timer.
        if self._buffer.qsize() or self._pending.qsize():
            self._arm_flush()
        # kombu restored the old channel's unacknowledged messages (when Redis could take them):
        # these copies may come again. (A reload, which keeps the channel, brings no second copies.)
        self._stale = {r.id: r for r in [*self._buffer.queue, *self._pending.queue,
                                         *(h.request for h in self._held.values())]}
        buffer_message = super().Strategy(task, app, consumer)

        def task_message_handler(message: Any, *args: Any, **kwargs: Any) -> None:
            if self._stale:
                # Before buffering: a full buffer flushes inside buffer_message. Protocol 2 (what
                # this app sends) carries the id in the headers.
                self._drop_stale((message.headers or {}).get("id"))
            buffer_message(message, *args, **kwargs)
            self._hold_not_due()

        return task_message_handler

    def _arm_flush(self) -> None:
        self._tref = self._consumer.timer.call_repeatedly(self.flush_interval, self._do_flush)

    def _drop_stale(self, task_id: str | None) -> None:
        """Its message came again on the live channel: forget the old copy, buffered or held. It is
        not acknowledged (its delivery tag died with its channel) and a held one's QoS raise was the
        old QoS's."""
        stale = self._stale.pop(task_id, None) if task_id else None
        if stale is None:
            return
        for token, held in self._held.items():
            if held.request is stale:
                held.entry.cancel()
                del self._held[token]
                break
        else:
            self._rebuffer([r for r in consume_queue(self._buffer) if r is not stale])
        log.info("%s: %s delivered again after a reconnect: the stale copy dropped", self.name, task_id)

    def _arm(self, token: int, eta: float) -> Any:
        return self._consumer.timer.call_at(eta, self._release, (token,), priority=6)

    def _eta(self, request: Request) -> float | None:
        """When ``request`` is due, on the timer's clock, as celery-batches reads it; None when it
        has no ETA, or one it cannot read (its _do_flush rejects that request, and logs why)."""
        if not request.eta:
            return None
        try:
            if request.utc:
                return to_timestamp(timezone.to_system(request.eta))
            return to_timestamp(request.eta, self.app.timezone)
        except (OverflowError, ValueError):
            return None

    def _hold_not_due(self) -> None:
        """Take the not yet due messages out of the buffer onto the timer, one QoS slot raised each."""
        if not self._buffer.qsize():
            return
        now, keep = monotonic(), []
        for request in list(consume_queue(self._buffer)):
            eta = self._eta(request)
            if eta is not None and eta > now:
                self._hold(request, eta)
            else:
                keep.append(request)
        self._rebuffer(keep)

    def _rebuffer(self, requests: list[Request]) -> None:
        """Put ``requests`` (back) into the buffer. celery-batches flushes on every flush_every-th
        message it counted: count only what is buffered."""
        for request in requests:
            self._buffer.put(request)
        self._count = count(self._buffer.qsize() + 1)

    def _hold(self, request: Request, eta: float) -> None:
        qos = self._consumer.qos
        raised = 0
        if qos is not None:
            before = qos.value
            raised = qos.increment_eventually() - before  # the event loop applies it
        token = next(self._tokens)
        self._held[token] = _Held(request, eta, self._arm(token, eta), qos, raised)
        log.debug("%s: %s held until its ETA (%d held)", self.name, request.id, len(self._held))

    def _release(self, token: int) -> None:
        held = self._held.pop(token, None)
        if held is None:  # already released (an entry armed twice)
            return
        qos = self._consumer.qos
        if held.raised and qos is held.qos:
            # Never below the consumer's own figure (it restores the QoS directly after a reconnect).
            lower = min(held.raised, qos.value - self._consumer.initial_prefetch_count)
            if lower > 0:
                qos.decrement_eventually(lower)
        self._rebuffer([held.request])
        if self._buffer.qsize() >= self.flush_every:
            self._do_flush()
        elif self._tref is None:  # as a message arriving does: the tick flushes it, or its batch
            self._arm_flush()

    def _pool_full(self) -> bool:
        """Every pool process has a batch: another one now would only wait behind them."""
        return len(self._in_pool) >= max(1, self._pool.num_processes)

    def _do_flush(self) -> None:
        # Called by the timer every flush_interval, and by the message handler once flush_every
        # messages arrived. Only a tick can find a partial buffer; while the pool is full it waits
        # (the timer stays armed) for more messages or for a batch to come back. Not-due messages
        # go to the timer first (the message handler flushes before it holds them), so
        # celery-batches' own pending queue stays empty and never counts towards a batch.
        self._hold_not_due()
        buffered = self._buffer.qsize() + self._pending.qsize()
        if 0 < buffered < self.flush_every and self._pool_full():
            log.debug("%s: %d buffered, %d batches in the pool: waiting for more", self.name, buffered,
                      len(self._in_pool))
            return
        super()._do_flush()

    def _batch_done(self, token: int) -> None:
        self._in_pool.discard(token)
        if self._buffer.qsize() and not self._pool_full():
            self._do_flush()

    def flush(self, requests: Collection[Request]) -> Any:
        requests = list(requests)
        late = [r for r in requests if r.task.acks_late]
        early = [r for r in requests if not r.task.acks_late]
        serializable = ([SimpleRequest.from_request(r) for r in requests],)
        # Taken before apply_async: the solo pool runs the batch, callbacks included, inside it.
        token = next(self._tokens)
        self._in_pool.add(token)
        log.debug("%s: batch of %d to the pool (%d batches in it)", self.name, len(requests), len(self._in_pool))

        def on_accepted(pid: int, time_accepted: float) -> None:
            for req in early:
                req.acknowledge()

        def on_return(result: Any) -> None:
            # The task returns True once every message is accounted for; anything else (it raised,
            # or said so) sends the messages back to the queue rather than dropping them.
            try:
                for req in late:
                    if result is True:
                        req.acknowledge()
                    else:
                        req.reject(requeue=True)
            finally:
                self._batch_done(token)

        def on_error(exc_info: Any) -> None:
            exc = exc_info
            for attribute in ("exception", "exc"):  # ExceptionInfo / ExceptionWithTraceback wrappers
                exc = getattr(exc, attribute, exc)
            # A hard time limit kills the process as surely as a crash: the messages go back too.
            lost = isinstance(exc, (WorkerLostError, TimeLimitExceeded))
            log.error("batch of %d %s: %s %r; %s", len(requests), self.name, type(exc_info).__name__, exc,
                      "requeued" if lost else "acknowledged")
            try:
                for req in late:
                    if lost:
                        req.reject(requeue=True)
                    else:
                        req.acknowledge()
            finally:
                self._batch_done(token)

        try:
            result = self._pool.apply_async(apply_batches_task, (self, serializable, 0, None),
                                            accept_callback=on_accepted, callback=on_return,
                                            error_callback=on_error)
        except BaseException:
            # The requests are in no list now: back into the buffer for the next tick, not lost
            # in memory until a restart.
            self._in_pool.discard(token)
            self._rebuffer(requests)
            if self._tref is None:
                self._arm_flush()
            raise
        for request in requests:  # they run: a copy that comes again now is a plain redelivery
            if self._stale.get(request.id) is request:
                del self._stale[request.id]
        return result
