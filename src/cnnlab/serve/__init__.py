"""The web app: draw a digit, watch a trained network respond; a small prediction API.

:func:`create_app` builds the FastAPI application for one trained run folder;
``cnnlab serve RUN`` runs it with uvicorn. FastAPI is imported only when the app is
built, so the rest of cnnlab works without the ``serve`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnlab.serve.app import Limits, create_app

__all__ = ["Limits", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cnnlab.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'cnnlab.serve' has no attribute {name!r}")
