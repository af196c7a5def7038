"""Handing freed heap memory back to the operating system once a burst of writes is over.

An ingest allocates and frees many multi-megabyte buffers (decoded batches, normalised copies,
SQL parameters). glibc keeps freed chunks below its adaptive mmap threshold (which rises to the
size of the buffers it has seen, up to 32 MB) in its arenas, so after 100k x 384 vectors the
service's resident set stayed ~60 MB above what it holds (bench.memory, "growth slack").
`malloc_trim(0)` returns those pages in a few milliseconds. It runs on a background thread once
writes have paused for `idle_seconds`, never on the write path; where the C library has no
`malloc_trim` (musl, macOS) the trimmer does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's malloc_trim(0), or None where the C library lacks it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    def __init__(self, idle_seconds: float, trim: Callable[[], None] | None = None) -> None:
        self.idle_seconds = idle_seconds
        self._trim = trim if trim is not None else _malloc_trim()
        self._last_write: float | None = None  # monotonic time of the latest write not yet trimmed after
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self._trim is not None and self.idle_seconds > 0

    def wrote(self) -> None:
        """A write happened: trim once writes have paused (cheap; called after every write)."""
        self._last_write = time.monotonic()

    def start(self) -> None:
        if not self.enabled:
            return
        self._thread = threading.Thread(target=self._run, name="nobackfill-heap-trim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.idle_seconds / 2):
            self.trim_if_idle()

    def trim_if_idle(self) -> bool:
        """Trim when a write happened and none for `idle_seconds`; whether it trimmed. (One caller,
        the trimmer's thread; a write racing the reset below only makes this trim its own.)"""
        last = self._last_write
        if self._trim is None or last is None or time.monotonic() - last < self.idle_seconds:
            return False
        self._last_write = None
        try:
            self._trim()
        except Exception:  # housekeeping must not take the service down; logged, not hidden
            log.exception("malloc_trim failed")
            return False
        return True
