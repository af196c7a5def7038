"""`nobackfill` command line."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

app = typer.Typer(help="nobackfill: backfill-free embedding model upgrades.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """nobackfill command line."""


@contextmanager
def _start_up_without_collections() -> Iterator[None]:
    """Start-up (imports, app, routes, ORM mappers) allocates a few hundred thousand objects and frees
    almost none, yet each allocation burst triggers collections that scan everything allocated so
    far: about a sixth of the start-up time for nothing. Collect nothing while starting, then freeze
    the survivors (long-lived; later collections need not scan them again) and collect as usual."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default NOBACKFILL_HOST)."),
    port: int | None = typer.Option(None, help="Port (default NOBACKFILL_PORT)."),
) -> None:
    """Start the HTTP service (migrates the database and loads indexes on start)."""
    with _start_up_without_collections():
        from service.settings import get_settings

        settings = get_settings()
        if settings.index_backend == "faiss":  # first: the snapshots are read while the rest imports
            from index.faiss import prefetch

            prefetch.start(settings.index_dir)
        import uvicorn

        from service.app import create_app

        logging.basicConfig(level=settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        application = create_app(settings)
    uvicorn.run(
        application,
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )


@app.command()
def migrate() -> None:
    """Apply database migrations and exit."""
    from service.settings import get_settings
    from service.store.db import make_engine
    from service.store.db import migrate as run_migrations

    settings = get_settings()
    engine = make_engine(settings.resolved_database_url, settings.sqlite_synchronous)
    run_migrations(engine)
    typer.echo(f"database at {engine.url.render_as_string(hide_password=True)} is up to date")


@app.command()
def evaluate(
    old_train: Path = typer.Option(..., "--old-train", help="Old-model embeddings of the training items (.npy)."),
    new_train: Path = typer.Option(..., "--new-train", help="New-model embeddings, rows paired with --old-train."),
    old_test: Path = typer.Option(..., "--old-test", help="Old-model embeddings of held-out items."),
    new_test: Path = typer.Option(..., "--new-test", help="New-model embeddings, rows paired with --old-test."),
    labels_train: Path | None = typer.Option(None, "--labels-train", help="Class labels of training rows."),
    labels_test: Path | None = typer.Option(None, "--labels-test", help="Class labels of test rows."),
    method: str = typer.Option("auto", "--method", help="auto, or one method name."),
    params: str | None = typer.Option(None, "--params", help="JSON object of method parameters."),
    seed: int = typer.Option(0, "--seed"),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report as JSON here."),
) -> None:
    """Offline upgrade report: fit transformation(s) on training pairs, measure on test pairs.

    Exit status: 0 when the selected method passes the compatibility criterion, 3 when none does,
    2 for bad input.
    """
    from service.cli.evaluate import run_evaluate

    raise typer.Exit(run_evaluate(old_train, new_train, old_test, new_test, labels_train, labels_test,
                                  method, seed, json_out, params))


@app.command()
def backup(target: Path = typer.Argument(..., help="New directory to write the backup to.")) -> None:
    """Take a consistent backup while the service runs (database, index snapshots, transformations)."""
    from service.cli.backup import BackupError, take_backup
    from service.settings import get_settings

    try:
        manifest = take_backup(get_settings(), target)
    except BackupError as exc:
        typer.echo(f"backup failed: {exc}", err=True)
        raise typer.Exit(1) from None
    size = sum(f["bytes"] for f in manifest["files"].values())
    typer.echo(f"backup written to {target}: {len(manifest['files'])} files, {size:,} bytes, "
               f"{manifest['seconds']} s")


@app.command()
def restore(
    source: Path = typer.Argument(..., help="A directory written by `nobackfill backup`."),
    force: bool = typer.Option(False, "--force", help="Replace a database that is not empty."),
) -> None:
    """Restore a backup into the configured database and data directory (stop the service first)."""
    from service.cli.backup import BackupError, restore_backup
    from service.settings import get_settings

    try:
        outcome = restore_backup(get_settings(), source, force=force)
    except BackupError as exc:
        typer.echo(f"restore failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"restored {source}: {outcome}")


jobs_app = typer.Typer(help="Durable jobs (training, ...).", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("watch")
def jobs_watch(
    job_id: int = typer.Argument(..., help="Job id (returned by POST /v1/upgrades/{id}/train)."),
    url: str = typer.Option("http://127.0.0.1:8000", "--url", envvar="NOBACKFILL_URL", help="Service URL."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="NOBACKFILL_API_KEY", help="API key."),
    interval: float = typer.Option(0.5, "--interval", min=0.05, help="Seconds between polls."),
) -> None:
    """Follow a job with a progress bar until it ends; exit 0 if it succeeded, 1 otherwise."""
    from service.cli.job_watch import watch

    raise typer.Exit(watch(url, job_id, api_key, interval))


@app.command()
def worker() -> None:
    """Run a job worker without the HTTP service (same database and data directory as the service).

    Start the service with NOBACKFILL_RUN_WORKER=false to leave all jobs to separate workers.
    """
    from service.worker import run_worker

    run_worker()


if __name__ == "__main__":
    app()
