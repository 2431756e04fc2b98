"""The HTTP API: ``create_app(deck)`` builds the FastAPI app; ``deck.router`` holds the v1
routes to mount in an existing app."""

from __future__ import annotations

from jobdeck.api.app import create_app

__all__ = ["create_app"]
