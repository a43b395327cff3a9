"""What one app instance holds: its settings and store."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from .config import Settings
from .store import Store

EXTENSION = "sample_app"


@dataclass(frozen=True)
class AppState:
    settings: Settings
    store: Store

    def attach(self, app: Flask) -> None:
        app.extensions[EXTENSION] = self


def current() -> AppState:
    state: AppState = current_app.extensions[EXTENSION]
    return state
