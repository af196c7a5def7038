"""Accessors for the application objects that routes need (kept on `app.state`).

They are `async def` on purpose: FastAPI runs plain `def` dependencies in its thread pool, and a
thread hop per dependency costs more than these attribute reads.
"""

from __future__ import annotations

from fastapi import Request

from service.backfill import Backfill
from service.gallery import Gallery
from service.registry import Registry
from service.settings import Settings
from service.store import Store
from service.upgrades import Upgrades


async def registry(request: Request) -> Registry:
    return request.app.state.registry


async def gallery(request: Request) -> Gallery:
    return request.app.state.gallery


async def settings(request: Request) -> Settings:
    return request.app.state.settings


async def store(request: Request) -> Store:
    return request.app.state.store


async def upgrades(request: Request) -> Upgrades:
    return request.app.state.upgrades


async def backfill(request: Request) -> Backfill:
    return request.app.state.backfill
