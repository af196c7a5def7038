"""`nobackfill` command line."""

from __future__ import annotations

import logging

import typer

app = typer.Typer(help="nobackfill: backfill-free embedding model upgrades.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """nobackfill command line."""


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default NOBACKFILL_HOST)."),
    port: int | None = typer.Option(None, help="Port (default NOBACKFILL_PORT)."),
) -> None:
    """Start the HTTP service (migrates the database and loads indexes on start)."""
    import uvicorn

    from service.app import create_app
    from service.settings import get_settings

    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )


@app.command()
def migrate() -> None:
    """Apply database migrations and exit."""
    from service.db import make_engine
    from service.db import migrate as run_migrations
    from service.settings import get_settings

    settings = get_settings()
    engine = make_engine(settings.resolved_database_url, settings.sqlite_synchronous)
    run_migrations(engine)
    typer.echo(f"database at {engine.url.render_as_string(hide_password=True)} is up to date")


if __name__ == "__main__":
    app()
