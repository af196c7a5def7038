"""Reading FAISS snapshots while the rest of the service starts.

A restart's two large costs are independent: importing the web stack and the database layer
(Python on one core, holding the GIL) and reading the index snapshots (FAISS parses them with the
GIL released). `nobackfill serve` calls `start` before it imports the application, so the reads
run on a second core while the imports run on the first; `FaissBackend` `claim`s the prefetch
of its directory and `restore` takes each partition from it when the file is unchanged since it
was read (same device, inode, size and modification time), reading the file itself otherwise.
Nothing depends on it: a failed, missing or stale prefetch costs the ordinary read.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from index.faiss.kinds import Snapshot

log = logging.getLogger(__name__)

SNAPSHOT_PATTERN = "*/*.npz"  # <directory>/<collection>/<model>.npz (FaissBackend._snapshot_path)
_started: dict[Path, SnapshotPrefetch] = {}
_started_lock = threading.Lock()


def _signature(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class SnapshotPrefetch:
    """Every snapshot under one directory, read on a background thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._loaded: dict[Path, tuple[tuple[int, int, int, int], Snapshot]] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read_all, name="nobackfill-snapshot-prefetch", daemon=True)
        self._thread.start()

    def _read_all(self) -> None:
        try:
            from index.faiss.kinds import load_snapshot  # FAISS and numpy import here, off the main thread

            for path in sorted(self.directory.glob(SNAPSHOT_PATTERN)):
                try:
                    before = _signature(path)
                    with open(path, "rb") as fh:
                        snapshot = load_snapshot(fh)
                    if _signature(path) == before:
                        self._loaded[path] = (before, snapshot)
                except Exception as exc:  # the ordinary read reports it, and rebuilds
                    log.debug("snapshot prefetch skipped %s: %s", path, exc)
        except Exception:
            log.exception("snapshot prefetch failed; snapshots are read at start-up instead")
        finally:
            self._done.set()

    def take(self, path: Path) -> Snapshot | None:
        """The snapshot read from `path` if that file is still the one read (each is taken once)."""
        self._done.wait()
        path = Path(path).resolve()  # the backend's directory may be relative (./data by default)
        entry = self._loaded.pop(path, None)
        try:
            if entry is None or _signature(path) != entry[0]:
                return None
        except OSError:
            return None
        return entry[1]

    def release(self) -> None:
        """Drop what was not taken (snapshots of partitions the database no longer has)."""
        self._done.wait()
        self._loaded.clear()


def start(directory: Path | str) -> None:
    """Begin reading every snapshot under `directory` (no-op when it does not exist or already began)."""
    path = Path(directory).resolve()
    if not path.is_dir():
        return
    with _started_lock:
        if path not in _started:
            _started[path] = SnapshotPrefetch(path)


def claim(directory: Path | str) -> SnapshotPrefetch | None:
    """The prefetch started for `directory`, handed to one backend (None if none was started)."""
    with _started_lock:
        return _started.pop(Path(directory).resolve(), None)
