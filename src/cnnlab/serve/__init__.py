"""The web app: draw a digit or upload a photo, watch a trained network respond; a small
prediction API.

:func:`create_app` builds the FastAPI application for one trained run folder;
``cnnlab serve RUN`` runs it with uvicorn. FastAPI is imported only when the app is
built, so the rest of cnnlab works without the ``serve`` extra.

- ``app.py``: the application and its routes;
- ``inputs.py``: what a request may hold, and reading it (:class:`Limits`, ``ApiError``);
- ``service.py``: one run behind the API: prediction and the model's description;
- ``pictures.py``: feature maps as PNG images;
- ``middleware.py``: Host check, body size and time limits, security headers, and the
  last word on clients that leave and errors nothing else handled;
- ``protocol.py``: uvicorn's HTTP protocol with a header deadline and a connection cap;
- ``hosts.py``: which ``Host`` headers to answer beyond loopback;
- ``server.py``: the uvicorn configuration within :class:`Limits`;
- ``schemas.py``: the OpenAPI document's shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnlab.serve.app import create_app
    from cnnlab.serve.inputs import Limits

__all__ = ["Limits", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from cnnlab.serve.app import create_app

        return create_app
    if name == "Limits":
        from cnnlab.serve.inputs import Limits

        return Limits
    raise AttributeError(f"module 'cnnlab.serve' has no attribute {name!r}")
