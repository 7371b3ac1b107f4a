"""Fault injection for worker tests, loaded into a worker with ``celery worker -I tests.support.crash_hook``.

Decoding an image whose bytes carry the marker below kills the worker's child process with SIGKILL,
as a crashing native decoder or the OOM killer would.
"""

from __future__ import annotations

import os
import signal

from imagesearch import imaging

MARKER = b"POISON-PILL"
_decode = imaging.decode


def _decode_or_die(data: bytes, **kwargs):
    if MARKER in data:
        os.kill(os.getpid(), signal.SIGKILL)
    return _decode(data, **kwargs)


imaging.decode = _decode_or_die
