"""A trained transformation's files: stored in the database with it, materialised per process.

Training writes the bundle to this process's DATA_DIR (atomically: a `.partial` directory renamed
into place) and stores every file in the database in the same transaction as the
transformation's row. A process that does not have the directory -- another service replica, a
replacement container with an empty disk -- writes it from the database the first time it needs
it, the same atomic way. So replicas share no disk, and a restart on a fresh disk serves exactly
what is active.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path, PurePosixPath

from service.store import Store, TransformationRecord


def read_bundle_files(directory: Path) -> dict[str, bytes]:
    """Every file under a saved bundle directory, by its relative POSIX path."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def bundle_directory(store: Store, data_dir: Path, record: TransformationRecord) -> Path:
    """The bundle's directory under `data_dir`, written from the database if this process lacks it.

    A transformation trained before its files were stored exists only where it was trained; then
    the (missing) local path is returned and loading it reports the problem.
    """
    target = data_dir / record.path
    if target.is_dir():
        return target
    files = store.transformation_files(record.id)
    if not files:
        return target
    staging = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        for name, content in files.items():
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts:
                raise ValueError(f"transformation {record.id}: unsafe file name {name!r} in the database")
            path = staging.joinpath(*relative.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # not another thread that finished first: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
