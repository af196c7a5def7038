"""Who ran a job: a worker identity that a restarted process can tell apart from its predecessor.

A job row names the worker that claimed it. At start-up a worker re-queues the running jobs whose
worker is provably gone instead of waiting `JOB_STALE_SECONDS` for their heartbeat to age. Host and
pid alone cannot prove that: a restarted container usually gets the same hostname *and* the same
pid (often 1), so the old job's worker looked alive -- it was this very process. The identity
therefore also carries

- a boot id, random per process start: same host and same pid as us but another boot id means the
  named process is an earlier incarnation of this pid, so it is gone;
- the process start time (Linux `/proc/<pid>/stat`, clock ticks since boot): a live process with the
  named pid but another start time is a different process that reused the pid.

Format: `host:pid:start:boot:runner` (`runner` tells apart several runners in one process, e.g. in
tests). Names in the older `host:pid:runner` form are still understood (pid liveness only).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

PROCESS_BOOT_ID = uuid.uuid4().hex[:12]


def process_start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot), or None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class WorkerIdentity:
    host: str
    pid: int
    start: int | None
    boot: str | None

    @classmethod
    def parse(cls, name: str | None) -> WorkerIdentity | None:
        if not name:
            return None
        parts = name.split(":")
        if len(parts) >= 5 and parts[1].isdigit():
            start = int(parts[2]) if parts[2].isdigit() else None
            return cls(parts[0], int(parts[1]), start, parts[3])
        if len(parts) >= 2 and parts[1].isdigit():  # legacy host:pid:runner
            return cls(parts[0], int(parts[1]), None, None)
        return None


def worker_name() -> str:
    pid = os.getpid()
    start = process_start_ticks(pid)
    started = start if start is not None else "-"
    return f"{socket.gethostname()}:{pid}:{started}:{PROCESS_BOOT_ID}:{uuid.uuid4().hex[:6]}"


def is_dead_on_this_host(name: str | None) -> bool:
    """True only when the named worker ran on this host and its process provably no longer runs."""
    ident = WorkerIdentity.parse(name)
    if ident is None or ident.host != socket.gethostname():
        return False
    if ident.pid == os.getpid():
        # This pid is ours: the named worker is us unless it came from an earlier start.
        return ident.boot is not None and ident.boot != PROCESS_BOOT_ID
    try:
        os.kill(ident.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # the pid exists but belongs to someone else: fall through to the start-time check
    if ident.start is None:
        return False
    now = process_start_ticks(ident.pid)
    return now is not None and now != ident.start
