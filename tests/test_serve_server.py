"""The server over real sockets: deadlines, connection cap, aborted uploads, Host check."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.serve import Limits, create_app  # noqa: E402
from cnnlab.serve.hosts import allowed_hosts, host_name  # noqa: E402
from cnnlab.serve.server import server_config  # noqa: E402

LIMITS = Limits(
    max_body_bytes=200_000,
    header_timeout=0.6,
    body_timeout=0.6,
    keep_alive_timeout=1,
    max_connections=8,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(digits_run: Path) -> Iterator[tuple[str, int]]:
    """A real uvicorn server for the app, in a thread, with short deadlines."""
    app = create_app(digits_run, limits=LIMITS)
    port = _free_port()
    srv = uvicorn.Server(
        server_config(app, "127.0.0.1", port, LIMITS, log_level="info", log_config=None)
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield "127.0.0.1", port
    srv.should_exit = True
    thread.join(timeout=10)


def _connect(addr: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(addr, timeout=5)
    sock.settimeout(5)
    return sock


def _read_all(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    start, data = time.monotonic(), b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        return data + b"<still open>", time.monotonic() - start
    return data, time.monotonic() - start


def test_silent_connection_is_closed_after_the_header_timeout(server: tuple[str, int]) -> None:
    with _connect(server) as sock:
        data, waited = _read_all(sock)
    assert data == b"" and waited < 3


def test_partial_request_head_is_closed_after_the_header_timeout(server: tuple[str, int]) -> None:
    with _connect(server) as sock:
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        time.sleep(0.3)
        sock.sendall(b"pe: image/png\r\n")  # trickling does not extend the deadline
        data, waited = _read_all(sock)
    assert data == b"" and waited < 3


def test_partial_head_after_a_keep_alive_answer_is_closed(server: tuple[str, int]) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while not first.endswith(b"}"):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /api/health HTTP/1.1\r\n")
        data, waited = _read_all(sock)
    assert data == b"" and waited < 3


@pytest.mark.parametrize(
    ("ctype", "start"),
    [
        (b"image/png", b"\x89PNG" + b"\0" * 100),
        (b"application/json", b"[[0, 0, 0"),
        (
            b"multipart/form-data; boundary=xx",
            b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n\x89PNG",
        ),
    ],
    ids=["png", "json", "multipart"],
)
def test_slow_body_gets_408_and_is_closed(
    server: tuple[str, int], ctype: bytes, start: bytes
) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + ctype + b"\r\n"
            b"Content-Length: 5000\r\n\r\n" + start
        )
        data, waited = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"not received within 0.6 seconds" in data
    assert not data.endswith(b"<still open>") and waited < 4


def test_connections_beyond_the_cap_are_refused(server: tuple[str, int]) -> None:
    held = [_connect(server) for _ in range(LIMITS.max_connections)]
    try:
        time.sleep(0.1)
        with _connect(server) as extra:
            data, _ = _read_all(extra)
        assert data.startswith(b"HTTP/1.1 503") and b"too many connections" in data
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(f"http://{server[0]}:{server[1]}/api/health").status_code == 200


def test_aborted_upload_logs_one_line(
    server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with _connect(server) as sock:
        sock.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"\x89PNG\r\n\x1a\n" + b"\0" * 5000
        )
        time.sleep(0.1)
    time.sleep(0.5)
    records = [r for r in caplog.records if r.levelno >= logging.INFO and "uvicorn" not in r.name]
    text = "\n".join(caplog.text.splitlines())
    assert "Traceback" not in text
    assert [r.exc_info for r in caplog.records if r.exc_info] == []
    assert len([r for r in records if "disconnected" in r.getMessage()]) == 1, text
    assert httpx.get(f"http://{server[0]}:{server[1]}/api/health").status_code == 200


def test_unexpected_error_is_logged_once(
    digits_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(digits_run, warm_up=False)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    app.state.service.predict = broken
    grid = [[0] * 28 for _ in range(28)]
    with TestClient(app) as c:  # raises in the test if anything escapes the app
        res = c.post("/api/predict", json=grid)
    assert res.status_code == 500 and res.json() == {"detail": "internal error (RuntimeError)"}
    assert len([r for r in caplog.records if r.exc_info]) == 1


def test_host_names() -> None:
    assert host_name("Example.COM:8000") == "example.com"
    assert host_name("[::1]:80") == "::1" and host_name("::1") == "::1"
    assert allowed_hosts("127.0.0.1") is None and allowed_hosts("localhost") is None
    names = allowed_hosts("0.0.0.0", ["digits.example", " "])
    assert names is not None
    assert {
        "localhost",
        "127.0.0.1",
        "::1",
        "digits.example",
        socket.gethostname().lower(),
    } <= names
    assert "192.0.2.7" in (allowed_hosts("192.0.2.7") or ())


def test_host_header_is_checked_beyond_loopback(digits_run: Path) -> None:
    app = create_app(
        digits_run, warm_up=False, allowed_hosts=allowed_hosts("192.0.2.7", ["digits.example"])
    )
    with TestClient(app, base_url="http://digits.example:8000") as c:
        assert c.get("/api/health").status_code == 200
        for host in ("192.0.2.7:8000", "localhost", "DIGITS.example."):
            assert c.get("/api/health", headers={"Host": host}).status_code == 200, host
        res = c.get("/api/health", headers={"Host": "evil.example"})
        assert res.status_code == 400 and "evil.example" in res.json()["detail"]
        res = c.post("/api/predict", content=b"x", headers={"Host": "rebind.example:8000"})
        assert res.status_code == 400


def test_cli_serve_has_the_limits_as_options(capsys: pytest.CaptureFixture[str]) -> None:
    from cnnlab.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in (
        "--header-timeout",
        "--body-timeout",
        "--keep-alive",
        "--max-connections",
        "--allowed-host",
        "--max-pixels",
    ):
        assert option in text, option
    assert "default 10" in text and "default 100" in text


def test_cli_defaults_are_the_library_defaults() -> None:
    from cnnlab.cli.serving import SERVER_OPTIONS

    defaults = {flag: default for flag, _kind, default, _m, _h in SERVER_OPTIONS}
    limits = Limits()
    assert defaults == {
        "--max-body": limits.max_body_bytes,
        "--max-pixels": limits.max_pixels,
        "--header-timeout": limits.header_timeout,
        "--body-timeout": limits.body_timeout,
        "--keep-alive": limits.keep_alive_timeout,
        "--max-connections": limits.max_connections,
    }


def test_refused_json_keeps_the_connection_alive(server: tuple[str, int]) -> None:
    """A 4xx for a hostile body is an ordinary answer: the next request uses the same socket."""
    row = "[" + ",".join(["0"] * 27 + ["1" + "0" * 400]) + "]"
    body = ("[" + ",".join([row] * 28) + "]").encode()
    with _connect(server) as sock:
        sock.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        first = b""
        while not first.endswith(b"}"):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 422") and b"connection: close" not in first.lower()
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        second = b""
        while not second.endswith(b"}"):
            second += sock.recv(65536)
        assert second.startswith(b"HTTP/1.1 200")


def test_server_allocator_returns_freed_memory(tmp_path: Path) -> None:
    """After the training allocator kept a freed 200 MB block, the server's setting gives
    it back, and later large blocks are given back as soon as they are freed."""
    import subprocess
    import sys

    script = tmp_path / "alloc.py"
    script.write_text(
        "import numpy as np\n"
        "from cnnlab.speed.allocator import return_freed_memory, tune_cpu_allocator\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'):\n"
        "            return int(line.split()[1]) // 1024\n"
        "def churn():\n"
        "    blocks = [np.ones(2_000_000) for _ in range(12)]\n"  # 12 x 16 MB
        "    del blocks\n"
        "assert tune_cpu_allocator()\n"
        "base = rss(); churn(); kept = rss() - base\n"
        "assert return_freed_memory()\n"
        "released = rss() - base; churn(); after = rss() - base\n"
        "print(kept, released, after)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "CNNLAB_TUNE_MALLOC": "1"}
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    kept, released, after = map(int, out.stdout.split())
    assert kept > 150 and released < 50 and after < 50, (kept, released, after)
