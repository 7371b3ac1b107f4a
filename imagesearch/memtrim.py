"""Handing freed heap memory back to the operating system after a large, one-off churn."""

from __future__ import annotations

import ctypes


def release_freed_memory() -> None:
    """glibc keeps freed heap memory for reuse; after loading models or vectors nothing reuses most
    of it, and the process would stay that much larger. No-op where libc is not glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
