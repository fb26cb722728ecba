"""The uvicorn server for the app, with its deadlines and connection limits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnlab.serve.inputs import Limits
from cnnlab.serve.protocol import guarded_protocol

if TYPE_CHECKING:
    import uvicorn

__all__ = ["MAX_HEAD_BYTES", "server_config"]

#: Largest request head (request line and headers) h11 buffers before answering 400.
MAX_HEAD_BYTES = 16 * 1024


def server_config(app: Any, host: str, port: int, limits: Limits, **options: Any) -> uvicorn.Config:
    """A ``uvicorn.Config`` serving ``app`` on ``host``:``port`` within ``limits``.

    The header deadline and the connection cap come from :mod:`cnnlab.serve.protocol`,
    the body deadline from :mod:`cnnlab.serve.middleware`; ``limit_concurrency`` answers 503 to requests beyond
    ``max_connections`` as well. ``options`` go to ``uvicorn.Config`` (``log_level``...).
    """
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(limits.header_timeout, limits.max_connections),
        timeout_keep_alive=limits.keep_alive_timeout,
        limit_concurrency=limits.max_connections + 1,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        lifespan="off",
        **options,
    )
