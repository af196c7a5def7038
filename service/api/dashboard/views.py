"""The admin dashboard: server-rendered pages over the same application objects as the API.

Pages read through the application layer (catalog, store, upgrades, compatibility matrix, metrics)
and render with Jinja2; charts are inline SVG (svg.py); the only JavaScript is the vendored
static/dashboard.js (polling job progress, confirmations, calling the JSON API for actions).
Access: with no API key configured everyone is admin; otherwise logging in with the admin key
gives admin rights (activate, roll back, train, cancel), the read-only key gives a read-only view,
and anonymous visitors get a read-only view unless reads require a key (then: the login page).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from service.api import deps
from service.api.auth import (
    ADMIN,
    SESSION_COOKIE,
    client_address,
    end_session,
    open_session,
    role_for_key,
    session_role,
)
from service.api.dashboard import svg
from service.api.ids import UpgradeId
from service.api.middleware.observability import QUERY_ROUTE
from service.api.throttle import TooManyAttempts
from service.core.errors import NotFound
from service.core.upgrades import SERVABLE_METHODS
from service.settings import Settings
from service.store import Store

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent
router = APIRouter(prefix="/dashboard", include_in_schema=False)


@cache
def _templates() -> Jinja2Templates:
    """The page templates, built on the first dashboard request: Jinja2 is a twentieth of the
    service's start-up, and queries (what a restart waits on) never render a page."""
    from fastapi.templating import Jinja2Templates

    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(svg=svg)
    return templates


def _role(request: Request, settings: Settings, store: Store) -> str | None:
    if not settings.api_key:
        return ADMIN
    return session_role(settings, store, request.cookies.get(SESSION_COOKIE))


def _page(request: Request, settings: Settings, store: Store, template: str, **context) -> Response:
    role = _role(request, settings, store)
    if role is None and settings.read_requires_key:
        return RedirectResponse("/dashboard/login", status_code=303)
    context.update(role=role, is_admin=role == ADMIN, keys_configured=bool(settings.api_key))
    return _templates().TemplateResponse(request, template, context)


def _foreign_origin(request: Request, settings: Settings) -> str | None:
    """The Origin (or, without one, the Referer's origin) of a form post when it is not this service's
    own address nor a trusted one: a login posted from another site must not set a cookie (login CSRF).
    Requests without either header (non-browser clients) are not browser CSRF and pass."""
    origin = request.headers.get("origin")
    if origin is None and (referer := request.headers.get("referer")):
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin is None:
        return None
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    if origin in settings.trusted_origins or (parts.scheme in ("http", "https") and parts.netloc == host and host):
        return None
    return origin


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, settings: deps.SettingsDep, store: deps.StoreDep,
               error: str | None = None) -> Response:
    return _templates().TemplateResponse(request, "login.html",
                                         {"error": error, "role": _role(request, settings, store)})


def _login_refused(request: Request, message: str, status_code: int, headers: dict | None = None) -> Response:
    return _templates().TemplateResponse(request, "login.html", {"error": message, "role": None},
                                      status_code=status_code, headers=headers)


async def _form_body(request: Request) -> bytes:
    """The login form's body (a key is short: anything past 4 KiB is not a key)."""
    return (await request.body())[:4096]


@router.post("/login")
def login(request: Request, settings: deps.SettingsDep, store: deps.StoreDep, throttle: deps.ThrottleDep,
          body: bytes = Depends(_form_body)) -> Response:
    if (origin := _foreign_origin(request, settings)) is not None:
        return _login_refused(request, f"login refused: posted from another site ({origin[:100]})", 403)
    client = client_address(request)
    try:
        throttle.check(client, login=True)
    except TooManyAttempts as exc:
        return _login_refused(request, exc.message, 429, exc.headers())
    key = (parse_qs(body.decode("utf-8", "replace")).get("api_key") or [""])[0]
    role = role_for_key(settings, key) if key else None
    if role is None:
        throttle.failed(client, login=True)
        return _login_refused(request, "key not accepted", 401)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(SESSION_COOKIE, open_session(settings, store, role, request),
                        max_age=int(settings.session_hours * 3600), httponly=True, samesite="strict",
                        secure=settings.secure_cookies, path="/")
    return response


@router.post("/logout")
def logout(request: Request, store: deps.StoreDep) -> Response:
    """Ends the session on the server too: a copied cookie stops working at once."""
    end_session(store, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("", response_class=HTMLResponse)
def overview(request: Request, settings: deps.SettingsDep, catalog: deps.CatalogDep, store: deps.StoreDep) -> Response:
    models = catalog.models()
    by_id = {m.id: m for m in models}
    roots = [m for m in models if m.successor_of_id is None]
    lineages = []
    for root in roots:
        members = catalog.lineage(root)
        lineages.append({"root": root.name, "graph": [
            {"name": m.name, "dim": m.dim, "parent": by_id[m.successor_of_id].name if m.successor_of_id else None}
            for m in members]})
    collections = []
    for c in catalog.collections():
        counts = store.item_counts(c.id)
        base = by_id[c.base_model_id]
        members = catalog.lineage(base)
        total = sum(counts.values())
        collections.append({
            "name": c.name, "count": total, "target": members[-1].name,
            "parts": [{"model": m.name, "count": counts.get(m.id, 0),
                       "share": counts.get(m.id, 0) / total if total else 0.0} for m in members],
            "progress": counts.get(members[-1].id, 0) / total if total else 1.0,
        })
    upgrades = [_upgrade_summary(store, by_id, u) for u in store.list_upgrades()]
    return _page(request, settings, store, "overview.html", lineages=lineages, collections=collections,
                 upgrades=upgrades)


def _upgrade_summary(store, by_id, u) -> dict:
    active = store.get_transformation(u.active_transformation_id) if u.active_transformation_id else None
    return {"id": u.id, "old": by_id[u.old_model_id].name, "new": by_id[u.new_model_id].name,
            "active": active, "pairs": store.pair_counts(u), "policy": u.policy}


def _migration_markers(catalog, store, upgrade) -> list[tuple[str, float]]:
    """(collection, share of its items whose current vector is in the upgrade's new model) for the
    collections holding items of either model."""
    markers = []
    for c in catalog.collections():
        counts = store.item_counts(c.id)
        total = sum(counts.values())
        if total and (counts.get(upgrade.old_model_id) or counts.get(upgrade.new_model_id)):
            markers.append((c.name, counts.get(upgrade.new_model_id, 0) / total))
    return markers


@router.get("/upgrades/{upgrade_id}", response_class=HTMLResponse)
def upgrade_page(request: Request, upgrade_id: UpgradeId, settings: deps.SettingsDep, catalog: deps.CatalogDep,
                 store: deps.StoreDep, t: int | None = None) -> Response:
    upgrade = store.get_upgrade(upgrade_id)
    if upgrade is None:
        raise NotFound(f"unknown upgrade {upgrade_id}", "upgrade_id")
    by_id = {m.id: m for m in catalog.models()}
    transformations = store.list_transformations(upgrade.id)
    wanted = t if t is not None else upgrade.active_transformation_id
    shown = next((x for x in transformations if x.id == wanted), transformations[-1] if transformations else None)
    jobs = [j for j in store.list_jobs(subject=f"upgrade:{upgrade.id}", limit=10)]
    return _page(request, settings, store, "upgrade.html", upgrade=_upgrade_summary(store, by_id, upgrade),
                 migration=_migration_markers(catalog, store, upgrade),
                 transformations=list(reversed(transformations)), shown=shown, jobs=jobs,
                 active_id=upgrade.active_transformation_id, methods=["auto", *[m for m in SERVABLE_METHODS
                                                                                 if m != "auto"]])


@router.get("/compatibility/{model}", response_class=HTMLResponse)
def compatibility_page(request: Request, model: str, settings: deps.SettingsDep, catalog: deps.CatalogDep,
                       compat: deps.CompatDep, store: deps.StoreDep) -> Response:
    record = catalog.model(model)
    return _page(request, settings, store, "compatibility.html", result=compat.compute(record), model=record.name)


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, settings: deps.SettingsDep, store: deps.StoreDep) -> Response:
    return _page(request, settings, store, "jobs.html", jobs=store.list_jobs(limit=50))


@router.get("/health", response_class=HTMLResponse)
def health_page(request: Request, settings: deps.SettingsDep, store: deps.StoreDep,
                metrics: deps.MetricsDep) -> Response:
    return _page(request, settings, store, "health.html", queries=metrics.window.summary(QUERY_ROUTE),
                 everything=metrics.window.summary())
