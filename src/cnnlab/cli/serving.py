"""The ``serve`` command: the drawing page and prediction API for a trained run."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

from cnnlab.cli.options import positive_int, whole_number
from cnnlab.errors import CnnlabError


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0 (at most a day)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 86400, got {text}")
    return value


#: The server's limits as options: flag, type, default (as in cnnlab.serve.Limits), help.
SERVER_OPTIONS: tuple[tuple[str, Any, Any, str, str], ...] = (
    ("--max-body", positive_int, 2_000_000, "BYTES", "largest request body accepted"),
    ("--max-pixels", positive_int, 2_000_000, "N", "largest image area accepted, in pixels"),
    (
        "--header-timeout",
        positive_seconds,
        10.0,
        "S",
        "seconds a connection may take to send a request head",
    ),
    (
        "--body-timeout",
        positive_seconds,
        30.0,
        "S",
        "seconds a request may take to send its body (then 408)",
    ),
    ("--keep-alive", positive_int, 5, "S", "seconds an idle connection stays open"),
    ("--max-connections", positive_int, 100, "N", "open connections at once (then 503)"),
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``serve`` command."""
    p = sub.add_parser(
        "serve",
        help="web page (draw a digit or upload a photo, see every layer respond) and "
        "prediction API",
        description="Serve a trained run: the page at / (draw a digit for a digit run, "
        "upload a photo for a photo run), POST /api/predict, GET /api/model and the "
        "OpenAPI document at /openapi.json.",
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
    for flag, kind, default, metavar, text in SERVER_OPTIONS:
        p.add_argument(
            flag, type=kind, default=default, metavar=metavar, help=f"{text} (default {default})"
        )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="when listening beyond loopback, also answer requests whose Host is NAME "
        "(repeatable; the bound address, this machine's names and localhost always are)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="server log level (default info)",
    )
    p.set_defaults(func=cmd_serve)


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
    from cnnlab.serve.hosts import allowed_hosts
    from cnnlab.serve.server import server_config
    from cnnlab.speed.allocator import return_freed_memory

    return_freed_memory()  # a server must not keep one large image's memory for good
    run = load_run(args.run)
    threads = args.threads or max(1, min(4, (os.cpu_count() or 2) // 2))
    torch.set_num_threads(threads)
    limits = Limits(
        max_body_bytes=args.max_body,
        max_pixels=args.max_pixels,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive_timeout=args.keep_alive,
        max_connections=args.max_connections,
    )
    hosts = allowed_hosts(args.host, args.allowed_host)
    app = create_app(run, limits=limits, allowed_hosts=hosts)
    _check_port_free(args.host, args.port)
    where = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"cnnlab serve: {run.spec.name} from {run.path} at http://{where}:{args.port}/ "
        f"(every layer explained: /explore; API: /api/predict, /api/model, /openapi.json; Ctrl+C stops)",
        file=sys.stderr,
    )
    if hosts is not None:
        print(
            f"cnnlab serve: warning: listening on {args.host}, reachable from other machines; "
            "there is no authentication",
            file=sys.stderr,
        )
    config = server_config(
        app,
        args.host,
        args.port,
        limits,
        log_level=args.log_level,
        access_log=args.log_level == "debug",
    )
    uvicorn.Server(config).run()
    return 0
