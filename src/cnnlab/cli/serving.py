"""The ``serve`` command: the drawing page and prediction API for a trained run."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys

from cnnlab.cli.options import positive_int, whole_number
from cnnlab.errors import CnnlabError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``serve`` command."""
    p = sub.add_parser(
        "serve",
        help="web page (draw a digit, see every layer respond) and prediction API",
        description="Serve a trained run: the drawing page at /, POST /api/predict, "
        "GET /api/model and the OpenAPI document at /openapi.json.",
    )
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument("--port", type=whole_number(0, 65535), default=8000, help="port (default 8000)")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch threads for inference (default: half the CPU cores, at most 4)",
    )
    p.add_argument(
        "--max-body",
        type=positive_int,
        default=2_000_000,
        metavar="BYTES",
        help="largest request body accepted (default 2000000)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="server log level (default info)",
    )
    p.set_defaults(func=cmd_serve)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    """Fail early, with one line, when the address cannot be listened on."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CnnlabError(f"--host {host!r}: cannot resolve ({exc.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise CnnlabError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise CnnlabError(
            f"the web app needs FastAPI, uvicorn and python-multipart ({exc.name} is missing); "
            "install them with: pip install 'cnnlab[serve]'"
        ) from None
    import torch

    from cnnlab.runs import load_run
    from cnnlab.serve import Limits, create_app
    from cnnlab.speed.allocator import return_freed_memory

    return_freed_memory()  # a server must not keep one large image's memory for good
    run = load_run(args.run)
    threads = args.threads or max(1, min(4, (os.cpu_count() or 2) // 2))
    torch.set_num_threads(threads)
    app = create_app(run, limits=Limits(max_body_bytes=args.max_body))
    _check_port_free(args.host, args.port)
    where = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"cnnlab serve: {run.spec.name} from {run.path} at http://{where}:{args.port}/ "
        f"(API: /api/predict, /api/model, /openapi.json; Ctrl+C stops)",
        file=sys.stderr,
    )
    if not _is_loopback(args.host):
        print(
            f"cnnlab serve: warning: listening on {args.host}, reachable from other machines; "
            "there is no authentication",
            file=sys.stderr,
        )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.log_level == "debug",
    )
    return 0
