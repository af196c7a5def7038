"""/docs (Swagger UI) and /redoc served from files on this machine, never from a CDN.

FastAPI's built-in pages load their JavaScript from jsDelivr, which leaves a blank page on an
offline or air-gapped host. The assets here come from the `fastapi-offline` wheel (pinned), whose
static folder ships swagger-ui-bundle.js, swagger-ui.css and redoc.standalone.js; only those files
are used, mounted under /docs/assets.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
_PREFIX = "/docs/assets"
# ReDoc's bundle still links its logo from cdn.redoc.ly: the policy keeps the browser on this host.
_LOCAL_ONLY = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                          "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; "
                                          "connect-src 'self'; font-src 'self' data:"}


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers.update(_LOCAL_ONLY)
    return page


def install_docs(app: FastAPI) -> None:
    """Mount the assets and the two pages (create the app with docs_url=None, redoc_url=None)."""
    app.mount(_PREFIX, StaticFiles(directory=ASSETS), name="docs-assets")
    title = f"{app.title} API"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _local_only(get_swagger_ui_html(openapi_url=app.openapi_url, title=title,
                                               swagger_js_url=f"{_PREFIX}/swagger-ui-bundle.js",
                                               swagger_css_url=f"{_PREFIX}/swagger-ui.css",
                                               swagger_favicon_url=f"{_PREFIX}/favicon.png"))

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _local_only(get_redoc_html(openapi_url=app.openapi_url, title=title,
                                          redoc_js_url=f"{_PREFIX}/redoc.standalone.js",
                                          redoc_favicon_url=f"{_PREFIX}/favicon.png", with_google_fonts=False))
