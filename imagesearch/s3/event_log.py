"""The S3 event log: the last event applied per object, so late or repeated deliveries change nothing.

S3 delivers at least once and in no particular order. The log keeps, per object, the last event
applied (Redis by default: the broker every process already reaches, shared by listeners and API
processes on any machine, unlike a SQLite file). An event is newer than the entry by ``sequencer``,
compared as AWS documents, or by event time when an event has no sequencer (MinIO, moto). Events
for one object are applied under a short per-object lock; the log is written with an atomic
compare-and-set, so it never moves backwards even if a lock expired.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import redis

from imagesearch.errors import TransientError
from imagesearch.redis_state import Keyspace
from imagesearch.s3.events import compare_sequencers

log = logging.getLogger(__name__)


class EventLogUnavailable(TransientError):
    """The event log (Redis) cannot be reached, or an object stayed locked too long. Transient."""


@dataclass(frozen=True)
class LogEntry:
    sequencer: str | None
    kind: str
    time: float | None


class EventLog(Protocol):
    def lock(self, object_id: str) -> AbstractContextManager[None]: ...

    def last(self, object_id: str) -> LogEntry | None: ...

    def record(self, object_id: str, sequencer: str | None, kind: str, event_time: float | None) -> bool:
        """Store the event unless the log already holds a later one (atomic); True when stored."""


def _newer(entry: LogEntry | None, sequencer: str | None, event_time: float | None) -> bool:
    """Whether an event (sequencer, time) may replace ``entry`` in the log (same rule as the Lua script)."""
    if entry is None:
        return True
    if sequencer:
        return not entry.sequencer or compare_sequencers(sequencer, entry.sequencer) >= 0
    if entry.sequencer:
        return False  # an event without a sequencer never overrides one that has it
    return entry.time is None or event_time is None or event_time >= entry.time


class MemoryEventLog:
    """The event log for one process (tests, a single-process setup)."""

    def __init__(self) -> None:
        self._entries: dict[str, LogEntry] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def lock(self, object_id: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(object_id, threading.Lock())
        with lock:
            yield

    def last(self, object_id: str) -> LogEntry | None:
        return self._entries.get(object_id)

    def record(self, object_id: str, sequencer: str | None, kind: str, event_time: float | None) -> bool:
        with self._guard:
            if not _newer(self._entries.get(object_id), sequencer, event_time):
                return False
            self._entries[object_id] = LogEntry(sequencer, kind, event_time)
            return True


# Compare-and-set: store (seq, kind, time) unless the entry holds a later event. Sequencers are
# compared as AWS documents (right-pad the shorter with zeros, then compare as strings; callers
# send upper-case hex); events without a sequencer compare by time and never replace one with it.
_RECORD_LUA = """
local cur_seq = redis.call('HGET', KEYS[1], 'seq')
local new_seq = ARGV[1]
if cur_seq and cur_seq ~= '' then
  if new_seq == '' then return 0 end
  local width = math.max(#cur_seq, #new_seq)
  local a = cur_seq .. string.rep('0', width - #cur_seq)
  local b = new_seq .. string.rep('0', width - #new_seq)
  if a > b then return 0 end
elseif new_seq == '' then
  local cur_time = redis.call('HGET', KEYS[1], 'time')
  if cur_time and cur_time ~= '' and ARGV[3] ~= '' and tonumber(cur_time) > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], 'seq', new_seq, 'kind', ARGV[2], 'time', ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""
_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisEventLog:
    """The event log in Redis: a hash per object (expiring after ``ttl_seconds``) and a lock key."""

    def __init__(self, client: redis.Redis, keys: Keyspace, ttl_seconds: int = 15 * 24 * 3600,
                 lock_seconds: float = 30.0, lock_wait_seconds: float = 30.0) -> None:
        self.client = client
        self.keys = keys
        self.ttl_seconds = ttl_seconds
        self.lock_seconds = lock_seconds
        self.lock_wait_seconds = lock_wait_seconds
        self._record = client.register_script(_RECORD_LUA)
        self._unlock = client.register_script(_UNLOCK_LUA)

    @contextmanager
    def lock(self, object_id: str) -> Iterator[None]:
        key, token = self.keys.s3_event_lock(object_id), uuid.uuid4().hex
        deadline = time.monotonic() + self.lock_wait_seconds
        try:
            while not self.client.set(key, token, nx=True, px=int(self.lock_seconds * 1000)):
                if time.monotonic() > deadline:
                    raise EventLogUnavailable(f"object {object_id} stayed locked for {self.lock_wait_seconds:.0f} s")
                time.sleep(0.02)
        except redis.RedisError as exc:
            raise EventLogUnavailable(f"event log: {exc}") from exc
        try:
            yield
        finally:
            try:
                self._unlock(keys=[key], args=[token])
            except redis.RedisError:
                log.warning("could not release the lock on %s; it expires in %.0f s", object_id, self.lock_seconds)

    def last(self, object_id: str) -> LogEntry | None:
        try:
            raw = self.client.hgetall(self.keys.s3_event_sequencer(object_id))
        except redis.RedisError as exc:
            raise EventLogUnavailable(f"event log: {exc}") from exc
        if not raw:
            return None
        values = {k.decode(): v.decode() for k, v in raw.items()}
        return LogEntry(values.get("seq") or None, values.get("kind", ""),
                        float(values["time"]) if values.get("time") else None)

    def record(self, object_id: str, sequencer: str | None, kind: str, event_time: float | None) -> bool:
        args = [sequencer.upper() if sequencer else "", kind, repr(event_time) if event_time is not None else "",
                self.ttl_seconds]
        try:
            return bool(self._record(keys=[self.keys.s3_event_sequencer(object_id)], args=args))
        except redis.RedisError as exc:
            raise EventLogUnavailable(f"event log: {exc}") from exc
