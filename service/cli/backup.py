"""`nobackfill backup DIR` and `nobackfill restore DIR`: a consistent copy of a running service.

What a backup holds, in the order it is taken:
1. transformation bundles under DATA_DIR/transformations (immutable once written; the database
   holds their bytes too, so these only spare a restored replica the first materialisation);
2. FAISS index snapshots under DATA_DIR/indexes, *before* the database: every snapshot is then at
   most as new as the database copy, which is what start-up repair needs (it replays writes after
   a snapshot's tag; a snapshot newer than its database could keep vectors the copy does not have);
3. the database (service/store/backup.py), as of one instant;
4. `manifest.json` (files, sizes, SHA-256), written last: a directory without it is not a backup.
The copy is assembled in `DIR.partial` and renamed, so DIR exists only when complete.

Restore (the service stopped) checks every checksum first, then replaces the database, the index
snapshots and the bundles. On the Milvus backend nothing of Milvus is copied -- the database holds
every vector -- and restore drops the deployment's Milvus collections (its prefix only) so that
start-up refills them from the restored database instead of serving newer vectors.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from service.settings import Settings
from service.store.backup import BackupError, backup_database, database_is_empty, restore_database

MANIFEST = "manifest.json"
FORMAT = 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_tree(source: Path, target: Path) -> None:
    """Copy the regular files under source (skipping in-flight *.tmp files of the writers)."""
    if not source.is_dir():
        return
    for path in sorted(source.rglob("*")):
        if path.is_file() and not path.name.endswith((".tmp", ".partial")):
            dest = target / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(path, dest)  # one open: a concurrent os.replace leaves us the old file
            except FileNotFoundError:
                continue  # replaced or removed while we listed: the database copy covers it


def take_backup(settings: Settings, target: Path) -> dict:
    """Write a complete backup to `target` (which must not exist); the manifest."""
    if target.exists():
        raise BackupError(f"{target} exists; a backup goes to a new directory")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    started = time.time()
    _copy_tree(settings.data_dir / "transformations", partial / "transformations")
    if settings.index_backend == "faiss":
        _copy_tree(settings.index_dir, partial / "indexes")
    database_file = backup_database(settings.resolved_database_url, partial)
    files = sorted(p for p in partial.rglob("*") if p.is_file())
    manifest = {
        "format": FORMAT, "created_at": started, "seconds": round(time.time() - started, 3),
        "database": database_file, "index_backend": settings.index_backend,
        "files": {str(p.relative_to(partial)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files},
    }
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=1))
    partial.rename(target)
    return manifest


def verify_backup(source: Path) -> dict:
    manifest_path = source / MANIFEST
    if not manifest_path.is_file():
        raise BackupError(f"{source} has no {MANIFEST}: not a complete backup")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"backup format {manifest.get('format')!r}; this version reads {FORMAT}")
    for name, meta in manifest["files"].items():
        path = source / name
        if not path.is_file() or path.stat().st_size != meta["bytes"] or _sha256(path) != meta["sha256"]:
            raise BackupError(f"{name} is missing or does not match its checksum")
    return manifest


def _drop_milvus_partitions(settings: Settings) -> int:
    from index import create_backend

    backend = create_backend(settings.index_backend, **settings.index_backend_options())
    try:
        keys = backend.partitions()
        for key in keys:
            backend.drop_partition(key)
        return len(keys)
    finally:
        backend.close()


def restore_backup(settings: Settings, source: Path, force: bool = False) -> dict:
    """Bring a backup back into the configured database and DATA_DIR (service stopped)."""
    manifest = verify_backup(source)
    url = settings.resolved_database_url
    if not force and not database_is_empty(url):
        raise BackupError("the target database is not empty; stop the service and pass --force to replace it")
    restore_database(url, source, manifest["database"])
    for name in ("indexes", "transformations"):
        target = settings.data_dir / name
        shutil.rmtree(target, ignore_errors=True)
        if (source / name).is_dir():
            shutil.copytree(source / name, target)
    dropped = _drop_milvus_partitions(settings) if settings.index_backend == "milvus" else 0
    return {"database": manifest["database"], "files": len(manifest["files"]), "milvus_collections_dropped": dropped}
