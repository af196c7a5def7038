"""Consistent copies of the database while the service runs, and bringing one back.

- SQLite: the online backup API (`sqlite3.Connection.backup`) copies every page inside one read
  transaction, so the copy is the database as of one instant; WAL mode lets writers go on.
- PostgreSQL: `pg_dump --format=custom` (one repeatable-read snapshot) and `pg_restore --clean
  --single-transaction` (all or nothing). Both tools must be on PATH (Debian: postgresql-client).

The database is the source of truth (vectors and transformation files included), so this copy
alone is enough to restore a service; index snapshots only make the restart faster.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from service.store.db import make_engine

SQLITE_FILE = "database.sqlite"
PG_FILE = "database.pgdump"


class BackupError(RuntimeError):
    """A backup or restore that could not be done; nothing was changed at the target."""


def _libpq_url(url: str) -> str:
    """SQLAlchemy's URL without the driver suffix, as pg_dump / pg_restore read it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _run(command: list[str]) -> None:
    if shutil.which(command[0]) is None:
        raise BackupError(f"{command[0]} is not installed (Debian package postgresql-client)")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackupError(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()[-2_000:]}")


def backup_database(url: str, target_dir: Path) -> str:
    """Copy the database into target_dir; the file name written."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        out = target_dir / SQLITE_FILE
        source = sqlite3.connect(parsed.database, timeout=30)
        try:
            copy = sqlite3.connect(out)
            try:
                source.backup(copy)  # pages=-1: one step, one read transaction: one instant
            finally:
                copy.close()
        finally:
            source.close()
        return out.name
    if parsed.get_backend_name() == "postgresql":
        out = target_dir / PG_FILE
        _run(["pg_dump", "--format=custom", "--no-owner", f"--file={out}", _libpq_url(url)])
        return out.name
    raise BackupError(f"no backup method for database {parsed.get_backend_name()}")


def database_is_empty(url: str) -> bool:
    engine = make_engine(url)
    try:
        return not inspect(engine).get_table_names()
    finally:
        engine.dispose()


def restore_database(url: str, source_dir: Path, file_name: str) -> None:
    """Replace the database at `url` with the copy (the service must be stopped)."""
    parsed = make_url(url)
    source = source_dir / file_name
    if parsed.get_backend_name() == "sqlite":
        if file_name != SQLITE_FILE:
            raise BackupError(f"{file_name} is not a SQLite backup; the target database is SQLite")
        target = Path(parsed.database)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(target.name + ".restoring")
        shutil.copyfile(source, staged)
        check = sqlite3.connect(staged)
        try:
            if check.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise BackupError(f"{source} fails SQLite's integrity check")
        finally:
            check.close()
        for suffix in ("-wal", "-shm"):  # the old database's log must not be replayed onto the copy
            target.with_name(target.name + suffix).unlink(missing_ok=True)
        staged.replace(target)
        return
    if parsed.get_backend_name() == "postgresql":
        if file_name != PG_FILE:
            raise BackupError(f"{file_name} is not a PostgreSQL backup; the target database is PostgreSQL")
        _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction",
              f"--dbname={_libpq_url(url)}", str(source)])
        return
    raise BackupError(f"no restore method for database {parsed.get_backend_name()}")
