"""Finding dataset files: data folders, the cache, and downloads from a local server."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import sources
from cnnlab.data.datasets import load_dataset
from cnnlab.data.idx import write_idx
from cnnlab.data.sources import DATASET_SOURCES, FILES, cache_dir, locate
from cnnlab.errors import CnnlabError


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CNNLAB_DATA", "CNNLAB_MIRRORS", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))


def _write_tiny_dataset(folder: Path, n_train: int = 12, n_test: int = 5) -> dict[str, str]:
    """Four small MNIST-shaped IDX .gz files; returns their MD5s by file name."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        write_idx(folder / FILES[f"{split}_images"], rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(folder / FILES[f"{split}_labels"], np.arange(n, dtype=np.uint8) % 10)
    _TINY_SIZES.update({name: (folder / name).stat().st_size for name in FILES.values()})
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in FILES.values()}


# The sizes of the files _write_tiny_dataset wrote last (the same for every call).
_TINY_SIZES: dict[str, int] = {}


class _Server:
    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.requests: list[str] = []
        self.httpd.requests = self.requests  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt: str, *args: object) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    root = tmp_path / "www"
    (root / "good").mkdir(parents=True)
    srv = _Server(root)
    yield srv
    srv.close()


@pytest.fixture
def closed_port() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/"


def _patch_mnist(
    monkeypatch: pytest.MonkeyPatch,
    md5: dict[str, str],
    mirrors: list[str],
    sizes: dict[str, int] | None = None,
) -> None:
    changes: dict[str, object] = {"md5": md5, "mirrors": tuple(mirrors)}
    changes["sizes"] = sizes if sizes is not None else dict(_TINY_SIZES)
    patched = dataclasses.replace(DATASET_SOURCES["mnist"], **changes)
    monkeypatch.setitem(DATASET_SOURCES, "mnist", patched)


def test_download_falls_back_to_second_mirror(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    md5 = _write_tiny_dataset(tmp_path / "www" / "good")
    _patch_mnist(monkeypatch, md5, [f"{server.base}/missing/", f"{server.base}/good/"])
    data = load_dataset("mnist", "train")
    assert data.images.shape == (12, 1, 28, 28)
    cached = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(
        [FILES["train_images"], FILES["train_labels"]]
    )
    assert any(r.startswith("/missing/") for r in server.requests)
    assert "downloading" in capsys.readouterr().err
    # second time: served from the cache, no new requests
    before = len(server.requests)
    assert len(load_dataset("mnist", "train")) == 12
    assert len(server.requests) == before


def test_corrupt_cached_file_is_fetched_again(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    md5 = _write_tiny_dataset(tmp_path / "www" / "good")
    _patch_mnist(monkeypatch, md5, [f"{server.base}/good/"])
    target = cache_dir() / "mnist" / FILES["test_labels"]
    target.parent.mkdir(parents=True)
    target.write_bytes(b"corrupt")
    path = locate("mnist", FILES["test_labels"])
    assert path == target
    assert hashlib.md5(path.read_bytes()).hexdigest() == md5[FILES["test_labels"]]


def test_md5_mismatch_on_every_mirror(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    md5 = _write_tiny_dataset(tmp_path / "www" / "good")
    wrong = {name: "0" * 32 for name in md5}
    _patch_mnist(monkeypatch, wrong, [f"{server.base}/good/", f"{server.base}/good/"])
    with pytest.raises(CnnlabError, match="MD5 mismatch") as info:
        load_dataset("mnist", "test")
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "cache").rglob("*.gz")), "no bad file may stay in the cache"


def test_offline_without_data_names_searched_folders(
    closed_port: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _patch_mnist(monkeypatch, dict(DATASET_SOURCES["mnist"].md5), [closed_port])
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "envdata"))
    with pytest.raises(CnnlabError) as info:
        load_dataset("mnist", data_dir=tmp_path / "given")
    msg = str(info.value)
    assert "\n" not in msg
    for folder in ("given", "envdata", "cache"):
        assert str(tmp_path / folder) in msg
    assert "download from the mirrors failed" in msg
    assert "--data-dir" in msg and "CNNLAB_DATA" in msg


def test_download_disabled(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="download disabled"):
        load_dataset("kmnist", "test", download=False)


def test_mirrors_env_override(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    md5 = _write_tiny_dataset(tmp_path / "www" / "good" / "mnist")
    _patch_mnist(monkeypatch, md5, ["http://example.invalid/"])
    monkeypatch.setenv("CNNLAB_MIRRORS", f"{server.base}/nothing/,{server.base}/good/{{name}}/")
    assert len(load_dataset("mnist", "test")) == 5


@pytest.mark.parametrize("layout", ["nested", "flat", "uncompressed"])
def test_data_dir_layouts(tmp_path: Path, layout: str) -> None:
    folder = tmp_path / "d" / "mnist" if layout == "nested" else tmp_path / "d"
    _write_tiny_dataset(folder)
    if layout == "uncompressed":
        for name in FILES.values():
            write_idx(folder / name[:-3], np.asarray(_read(folder / name)))
            (folder / name).unlink()
    data = load_dataset("mnist", "test", data_dir=tmp_path / "d", download=False)
    assert data.images.shape == (5, 1, 28, 28)


def test_env_data_dir_and_cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_tiny_dataset(tmp_path / "env" / "fashion-mnist")
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "env"))
    data = load_dataset("fashion-mnist", "test", download=False)
    assert data.classes[0] == "T-shirt/top" and len(data) == 5
    monkeypatch.delenv("CNNLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "cnnlab"


def test_user_files_are_not_md5_checked(tmp_path: Path) -> None:
    _write_tiny_dataset(tmp_path / "d")  # MD5s differ from the real MNIST ones
    assert locate("mnist", FILES["train_images"], tmp_path / "d", download=False).parent == (
        tmp_path / "d"
    )


def test_source_table_is_complete() -> None:
    assert set(DATASET_SOURCES) == {"mnist", "fashion-mnist", "kmnist"}
    for src in DATASET_SOURCES.values():
        assert set(src.md5) == set(FILES.values())
        assert all(len(h) == 32 for h in src.md5.values())
        assert set(src.sizes) == set(FILES.values()) and min(src.sizes.values()) > 4000
        assert len(src.classes) == 10 and src.mirrors
        # https first; a plain-http mirror, if any, only after every https one
        schemes = [m.split(":", 1)[0] for m in src.mirrors]
        assert schemes[0] == "https" and schemes == sorted(schemes, reverse=True)
    assert DATASET_SOURCES["kmnist"].classes[-1] == "wo"
    assert sources.mirrors_for(DATASET_SOURCES["mnist"])[0].startswith("https://ossci")


def _read(path: Path) -> np.ndarray:
    from cnnlab.data.idx import read_idx

    return read_idx(path)


def test_real_sizes_match_the_shared_copies() -> None:
    from tests.conftest import real_mnist_dir

    root = real_mnist_dir()
    if root is None:
        pytest.skip("real MNIST not available")
    for name in FILES.values():
        path = root / "mnist" / name
        if path.exists():
            assert path.stat().st_size == DATASET_SOURCES["mnist"].sizes[name]


class _HostileHandler(http.server.BaseHTTPRequestHandler):
    """A mirror that misbehaves in the way its path names; the file is the real one."""

    def log_message(self, fmt: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        kind, _, name = self.path.strip("/").partition("/")
        body = (self.server.root / name).read_bytes()  # type: ignore[attr-defined]
        try:
            if kind == "endless":  # no Content-Length, zeros until 64 MiB
                self.send_response(200)
                self.end_headers()
                block = bytes(1 << 16)
                for _ in range(1024):
                    self.wfile.write(block)
            elif kind == "liar":  # a Content-Length far over the file's size
                self.send_response(200)
                self.send_header("Content-Length", str(1 << 30))
                self.end_headers()
                self.wfile.write(body)
            elif kind == "drip":  # the right bytes, one every 50 ms
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.05)
            elif kind == "to-ftp":
                self.send_response(302)
                self.send_header("Location", f"ftp://127.0.0.1/{name}")
                self.end_headers()
            elif kind == "to-endless":
                self.send_response(302)
                self.send_header("Location", f"/endless/{name}")
                self.end_headers()
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], dict[str, int]]]:
    root = tmp_path / "files"
    md5 = _write_tiny_dataset(root)
    sizes = {name: (root / name).stat().st_size for name in FILES.values()}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HostileHandler)
    httpd.daemon_threads = True
    httpd.root = root  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", md5, sizes
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("endless", "more than"),
        ("liar", "Content-Length"),
        ("drip", "deadline"),
        ("to-ftp", "redirect"),
        ("to-endless", "more than"),
    ],
)
def test_hostile_mirror_gives_one_line_and_leaves_no_file(
    hostile: tuple[str, dict[str, str], dict[str, int]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    message: str,
) -> None:
    base, md5, sizes = hostile
    _patch_mnist(monkeypatch, md5, [f"{base}/{kind}/"], sizes)
    monkeypatch.setenv("CNNLAB_DOWNLOAD_DEADLINE", "0.5")
    start = time.perf_counter()
    with pytest.raises(CnnlabError, match=message) as info:
        locate("mnist", FILES["test_labels"])
    assert time.perf_counter() - start < 10
    assert "\n" not in str(info.value)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()], "nothing stays"


def test_good_mirror_within_the_limits(
    hostile: tuple[str, dict[str, str], dict[str, int]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, md5, sizes = hostile
    _patch_mnist(monkeypatch, md5, [f"{base}/endless/", f"{base}/drip/"], sizes)
    monkeypatch.setenv("CNNLAB_DOWNLOAD_DEADLINE", "30")
    path = locate("mnist", FILES["test_labels"])
    assert hashlib.md5(path.read_bytes()).hexdigest() == md5[FILES["test_labels"]]
    assert [p.name for p in path.parent.iterdir()] == [FILES["test_labels"]]


@pytest.mark.parametrize(
    ("old", "new", "allowed"),
    [
        ("https://a.org/x.gz", "https://b.org/x.gz", True),
        ("http://a.org/x.gz", "https://b.org/x.gz", True),
        ("http://a.org/x.gz", "http://b.org/x.gz", True),
        ("https://a.org/x.gz", "http://a.org/x.gz", False),
        ("https://a.org/x.gz", "ftp://a.org/x.gz", False),
        ("http://a.org/x.gz", "file:///etc/passwd", False),
    ],
)
def test_redirect_rule_never_downgrades(old: str, new: str, allowed: bool) -> None:
    assert sources.redirect_allowed(old, new) is allowed


def test_unknown_file_is_never_downloaded_unchecked(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    md5 = _write_tiny_dataset(tmp_path / "www" / "good")
    md5.pop(FILES["test_labels"])
    _patch_mnist(monkeypatch, md5, [f"{server.base}/good/"])
    with pytest.raises(CnnlabError, match="checksum"):
        locate("mnist", FILES["test_labels"])
    assert not server.requests


@pytest.mark.parametrize("value", ["soon", "0", "-5", "inf", "nan"])
def test_bad_deadline_setting_is_one_line(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CNNLAB_DOWNLOAD_DEADLINE", value)
    with pytest.raises(CnnlabError, match="CNNLAB_DOWNLOAD_DEADLINE"):
        sources.download_deadline()


def test_deadline_default_and_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CNNLAB_DOWNLOAD_DEADLINE", raising=False)
    assert sources.download_deadline() == sources.DOWNLOAD_DEADLINE == 600
    monkeypatch.setenv("CNNLAB_DOWNLOAD_DEADLINE", "42.5")
    assert sources.download_deadline() == 42.5
