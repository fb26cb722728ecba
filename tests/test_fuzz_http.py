"""Fuzzing the web app: hostile requests on every route must get an answer below 500.

Three sources of requests, each counted:

* hypothesis: methods, paths, query strings, content types and bodies (bytes, JSON of any
  shape with huge and non-finite numbers, 28×28 grids near the limits) through the app in
  this process;
* seeded mutators (``random.Random(seed)``): valid PNG, JPEG, GIF, BMP and WebP files,
  JSON grids and multipart uploads with bytes flipped, cut, inserted and repeated;
* raw bytes over a real socket to ``cnnlab serve`` in a subprocess: mutated request
  heads (odd Content-Length, Host, Transfer-Encoding, methods) and bodies. Its log must
  hold no traceback, and its peak memory is read from ``/proc`` at the end.

Every answer must be below 500, and every 4xx a JSON ``{"detail": "one line"}``. A
normal run sends a few hundred requests; ``CNNLAB_FUZZ=full`` sends over 5,000.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from tests.fuzzing import PeakMemory, cases, full, fuzz_settings

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.serve import Limits, create_app  # noqa: E402

pytestmark = pytest.mark.fuzz

ROUTES = [
    "/",
    "/api/predict",
    "/api/predict?features=1",
    "/api/model",
    "/api/health",
    "/openapi.json",
    "/static/app.js",
    "/static/style.css",
    "/static/../pyproject.toml",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/docs",
    "/nothing",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
CONTENT_TYPES = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/bmp",
    "image/webp",
    "application/json",
    "application/json; charset=utf-16",
    "multipart/form-data",
    "multipart/form-data; boundary=fuzz",
    "multipart/form-data; boundary=",
    "text/plain",
    "image/tiff",
    "",
]
#: JSON number literals beyond float range or Python's int-string limit, and non-finite ones.
LITERALS = [
    b"9" * 5000,
    b"-" + b"9" * 4400,
    b"1" + b"0" * 400,
    b"1e999",
    b"-1e999",
    b"NaN",
    b"-Infinity",
]
#: Requests sent, by source; the last test checks the total.
SENT: Counter[str] = Counter()
#: Statuses seen, for the summary printed with ``-s``.
STATUSES: Counter[int] = Counter()


def check_answer(method: str, status: int, body: bytes, what: str) -> None:
    """Below 500; a 4xx is JSON with a one-line string ``detail``."""
    STATUSES[status] += 1
    assert status < 500, f"{what}: {status} {body[:300]!r}"
    if 400 <= status < 500 and method != "HEAD":
        detail = json.loads(body)["detail"]
        assert isinstance(detail, str) and detail and "\n" not in detail, (what, detail)


def digit_image(mode: str = "L", size: int = 64) -> Image.Image:
    """A small drawn "7", dark on light."""
    img = Image.new(mode, (size, size), "white")
    ImageDraw.Draw(img).line([(12, 12), (52, 12), (28, 54)], fill="black", width=6)
    return img


def encoded(fmt: str, mode: str = "L") -> bytes:
    """The digit as a file of ``fmt``."""
    buf = io.BytesIO()
    digit_image("RGB" if fmt == "JPEG" and mode == "RGBA" else mode).save(buf, format=fmt)
    return buf.getvalue()


SEEDS: list[tuple[bytes, str]] = [
    (encoded("PNG"), "image/png"),
    (encoded("PNG", "RGBA"), "image/png"),
    (encoded("JPEG"), "image/jpeg"),
    (encoded("GIF", "P"), "image/gif"),
    (encoded("BMP"), "image/bmp"),
    (encoded("WEBP"), "image/webp"),
    (
        json.dumps([[(r * 28 + c) % 256 for c in range(28)] for r in range(28)]).encode(),
        "application/json",
    ),
    (json.dumps({"image": [[0] * 28] * 28}).encode(), "application/json"),
]


def multipart(data: bytes, ctype: str, boundary: str = "fuzzfuzz") -> tuple[bytes, str]:
    """``data`` as the ``file`` field of a multipart body, and its content type."""
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d"\r\n'
            f"Content-Type: {ctype}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def mutate(data: bytes, rng: random.Random) -> bytes:
    """``data`` with one to eight byte flips, cuts, insertions or repeats."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        kind = rng.randrange(6)
        at = rng.randrange(len(out) + 1)
        if kind == 0 and out:  # flip a byte
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1 and out:  # set a byte to an extreme
            out[min(at, len(out) - 1)] = rng.choice((0, 0xFF, 0x7F, 0x80))
        elif kind == 2:  # truncate
            del out[at:]
        elif kind == 3:  # insert random bytes
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif kind == 4 and out:  # repeat a slice (chunks, rows)
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randint(1, 64)]
        else:  # a huge or odd number where a digit was
            text = rng.choice((b"1" + b"0" * 400, b"9" * 5000, b"1e999", b"NaN", b"-0", b"[[["))
            out[at:at] = text
    return bytes(out)


@pytest.fixture(scope="module")
def client(digits_run: Path) -> Iterator[TestClient]:
    app = create_app(digits_run, limits=Limits(max_body_bytes=200_000))
    with TestClient(app) as c:  # an exception escaping the app fails the test
        yield c


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**400), 10**4000, 2**64])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
numbers = st.one_of(st.integers(-2, 300), st.floats(-1, 256), st.just(255), st.just(0))


@st.composite
def grids(draw: st.DrawFn) -> list[list[Any]]:
    """A grid of 27 to 29 rows and columns: one fill value and a few other cells (drawing
    every one of 784 cells would make generation, not the requests, the cost)."""
    rows, cols = draw(st.integers(27, 29)), draw(st.integers(27, 29))
    fill = draw(numbers)
    grid = [[fill] * cols for _ in range(rows)]
    for r, c, v in draw(
        st.lists(st.tuples(st.integers(0, rows - 1), st.integers(0, cols - 1), numbers), max_size=6)
    ):
        grid[r][c] = v
    return grid


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    """A request: method, URL, headers, body."""
    method = draw(st.sampled_from(METHODS))
    url = draw(st.sampled_from(ROUTES))
    if draw(st.booleans()):
        query = draw(
            st.text(
                st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"),
                max_size=30,
            )
        )
        url += ("&" if "?" in url else "?") + query
    headers = {"Content-Type": draw(st.sampled_from(CONTENT_TYPES))}
    if draw(st.integers(0, 9)) == 0:
        headers["Content-Type"] = draw(
            st.text(
                st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                max_size=40,
            )
        )
    kind = draw(st.sampled_from(["bytes", "json", "grid", "literal", "seed", "multipart", "empty"]))
    if kind == "bytes":
        body = draw(st.binary(max_size=300))
    elif kind == "json":
        body = json.dumps(draw(json_values), allow_nan=True).encode(
            draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
        )
    elif kind == "grid":
        grid = draw(grids())
        body = json.dumps(draw(st.sampled_from([grid, {"image": grid}])), allow_nan=True).encode()
    elif kind == "literal":  # numbers json.dumps cannot write, in a 28×28 grid
        literal = draw(st.sampled_from(LITERALS))
        row = b"[" + b",".join([b"0"] * 27 + [literal]) + b"]"
        body = b"[" + b",".join([row] * 28) + b"]"
    elif kind == "seed":
        body, headers["Content-Type"] = draw(st.sampled_from(SEEDS))
    elif kind == "multipart":
        data, ctype = draw(st.sampled_from(SEEDS))
        body, headers["Content-Type"] = multipart(data, ctype)
    else:
        body = b""
    if kind != "bytes" and draw(st.integers(0, 3)) > 0:
        # Most bodies go where they are read, with the type they claim, so that the
        # parsers (not only the router) see them.
        method, url = "POST", draw(st.sampled_from(["/api/predict", "/api/predict?features=1"]))
        if kind in ("json", "grid", "literal"):
            headers["Content-Type"] = "application/json"
    return method, url, headers, body


@fuzz_settings(bounded=150, on_demand=4000)
@given(request=requests())
def test_fuzz_requests_in_process(
    client: TestClient, request: tuple[str, str, dict[str, str], bytes]
) -> None:
    method, url, headers, body = request
    raw = {k: v.encode("latin-1") for k, v in headers.items()}  # httpx would insist on ASCII
    res = client.request(method, url, content=body, headers=raw)
    SENT["hypothesis"] += 1
    check_answer(method, res.status_code, res.content, f"{method} {url} {headers}")


def test_fuzz_mutated_files_in_process(client: TestClient) -> None:
    rng = random.Random(20261129)
    n = cases(bounded=150, on_demand=4000)
    for i in range(n):
        data, ctype = SEEDS[i % len(SEEDS)]
        body = mutate(data, rng)
        if rng.random() < 0.3:  # the same, as a multipart upload, maybe with its frame cut
            body, ctype = multipart(body, ctype)
            if rng.random() < 0.5:
                body = mutate(body, rng)
        url = "/api/predict" + ("?features=1" if rng.random() < 0.2 else "")
        res = client.post(url, content=body, headers={"Content-Type": ctype})
        SENT["mutated"] += 1
        check_answer("POST", res.status_code, res.content, f"case {i} {ctype}")
    assert SENT["mutated"] == n
    assert client.get("/api/health").status_code == 200


# ---- over a real socket ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(digits_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``cnnlab serve`` in a subprocess with short deadlines; its log file."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "cnnlab", "serve", str(digits_run), "--port", str(port)]
    cmd += ["--header-timeout", "1", "--body-timeout", "1", "--threads", "1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield {"port": port, "pid": proc.pid, "log": log}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def raw_request(rng: random.Random) -> bytes:
    """A request head and body with odd but complete framing."""
    method = rng.choice(["GET", "POST", "POST", "PUT", "HEAD", "OPTIONS", "BREW", "get"])
    path = rng.choice(
        ROUTES + ["/%ff", "/" + "a" * 3000, "*", "/api/predict?features=" + "1" * 100]
    )
    data, ctype = rng.choice(SEEDS)
    body = mutate(data, rng) if rng.random() < 0.7 else data
    headers = [f"Host: {rng.choice(['127.0.0.1', 'localhost', 'evil.example', '', '[::1]:9'])}"]
    headers.append(f"Content-Type: {ctype}")
    framing = rng.randrange(8)
    if framing == 0:
        headers.append(f"Content-Length: {rng.choice(['-1', '1e3', '0x10', '9' * 30, ''])}")
    elif framing == 1:
        headers.append(f"Content-Length: {len(body)}")
        headers.append(f"Content-Length: {len(body) + 1}")
    elif framing == 2:
        headers.append("Transfer-Encoding: chunked")
        body = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    elif framing == 3:
        headers.append("Transfer-Encoding: chunked")
        body = b"zz\r\n" + body
    else:
        headers.append(f"Content-Length: {len(body)}")
    if rng.random() < 0.2:
        headers.append(rng.choice(["X-A: " + "b" * 9000, "Bad Header: x", "X-\x01: y", ": empty"]))
    head = f"{method} {path} HTTP/1.1\r\n" + "\r\n".join(headers) + "\r\nConnection: close\r\n\r\n"
    return head.encode("latin-1", "replace") + body


def test_fuzz_raw_requests_over_a_socket(served: dict[str, Any]) -> None:
    rng = random.Random(13)
    n = cases(bounded=50, on_demand=2000)
    for i in range(n):
        request = raw_request(rng)
        with socket.create_connection(("127.0.0.1", served["port"]), timeout=10) as sock:
            # A request refused before it was all read still has its answer to check.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(request)
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(65536):
                    answer += chunk
        SENT["socket"] += 1
        assert answer.startswith(b"HTTP/1.1 "), (i, request[:200], answer[:200])
        status = int(answer[9:12])
        head, _, body = answer.partition(b"\r\n\r\n")
        method = request.split(b" ", 1)[0].decode()
        check_answer(method if method != "HEAD" else "HEAD", status, body, f"socket case {i}")
    assert httpx.get(f"http://127.0.0.1:{served['port']}/api/health").status_code == 200
    log = served["log"].read_text()
    assert "Traceback" not in log, log[-3000:]
    peak_kb = _peak_kb(served["pid"])
    print(f"\nserver peak RSS after {n} socket requests: {peak_kb / 1024:.0f} MB")
    assert peak_kb < 500 * 1024


def _peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


MEMORY = PeakMemory()


@pytest.fixture(autouse=True, scope="module")
def _own_peak_memory(client: TestClient) -> None:
    """Measure from after the model is trained and loaded: the cases' own memory."""
    MEMORY.start()


def test_fuzz_request_count() -> None:
    """All three sources ran, as many requests as this mode asks for."""
    total = sum(SENT.values())
    print(
        f"\nHTTP fuzz: {dict(SENT)} = {total} requests; statuses {dict(sorted(STATUSES.items()))}"
    )
    # The in-process requests ran in this process: its peak covers their decoding.
    print(f"in-process requests: {MEMORY.check()}")
    assert SENT["mutated"] and SENT["socket"] and SENT["hypothesis"]
    assert total >= (5000 if full() else 300)
