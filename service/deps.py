"""Accessors for the application objects that routes need (kept on `app.state`)."""

from __future__ import annotations

from fastapi import Request

from service.gallery import Gallery
from service.registry import Registry
from service.settings import Settings


def registry(request: Request) -> Registry:
    return request.app.state.registry


def gallery(request: Request) -> Gallery:
    return request.app.state.gallery


def settings(request: Request) -> Settings:
    return request.app.state.settings
