"""The uvicorn server for the app, with its deadlines and connection limits."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cnnlab.serve.inputs import Limits
from cnnlab.serve.protocol import guarded_protocol

if TYPE_CHECKING:
    import uvicorn

__all__ = ["MAX_HEAD_BYTES", "background_server", "server_config"]

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


@contextlib.contextmanager
def background_server(app: Any, host: str = "127.0.0.1", timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` on a free port of ``host`` in a background thread and yield its base
    URL; the server stops when the block ends. For scripts and tests that drive the page
    in a browser (``cnnlab serve`` runs uvicorn in the foreground instead)."""
    import uvicorn

    with socket.socket() as s:
        s.bind((host, 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server on {host}:{port} did not start")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
