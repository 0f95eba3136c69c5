"""`app.main:app` is built on first access, once."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

import app.main


def test_module_app_is_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[FastAPI] = []

    def factory() -> FastAPI:
        built.append(FastAPI())
        return built[-1]

    monkeypatch.setattr(app.main, "create_app_from_env", factory)
    app.main._shared_app.cache_clear()
    try:
        assert built == []  # nothing is built before the first access
        first: Any = app.main.app
        second: Any = app.main.app
        assert first is second is built[0]
        assert len(built) == 1
    finally:
        app.main._shared_app.cache_clear()


def test_other_module_attributes_are_not_invented() -> None:
    with pytest.raises(AttributeError):
        app.main.nothing_here  # noqa: B018
