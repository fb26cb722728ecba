"""Where the IDX datasets come from: file names, mirrors, checksums, class names.

Finding a file (:func:`locate`) tries, in order:

1. the ``data_dir`` argument (the command line's ``--data-dir``),
2. the ``CNNLAB_DATA`` environment variable (one folder, or several joined by ``os.pathsep``),
3. the user cache: ``CNNLAB_CACHE``, else ``$XDG_CACHE_HOME/cnnlab``, else ``~/.cache/cnnlab``,
4. a download into that cache, trying each mirror in order.

In a data folder both ``DIR/<dataset>/<file>`` and ``DIR/<file>`` are accepted, and
the uncompressed name (without ``.gz``) too. Files the user provides are not
MD5-checked (re-gzipped copies are fine; the IDX reader validates them); cached
and downloaded files are, and a corrupt cached file is fetched again.
``CNNLAB_MIRRORS`` (comma-separated base URLs, ``{name}`` is replaced by the
dataset name) overrides every dataset's mirror list.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.atomic import atomic_path
from cnnlab.cache import cache_dir
from cnnlab.errors import CnnlabError

__all__ = [
    "DATASET_SOURCES",
    "DatasetSource",
    "cache_dir",
    "data_dirs",
    "locate",
    "locate_file",
    "md5sum",
]

log = logging.getLogger(__name__)

#: The four files of every MNIST-style dataset, by role.
FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_USER_AGENT = "cnnlab/0.1 (+https://pypi.org/project/cnnlab)"
_CHUNK = 1 << 16
#: Seconds one file's download may take from one mirror, unless
#: ``CNNLAB_DOWNLOAD_DEADLINE`` says otherwise (26 MB at 100 kB/s fits).
DOWNLOAD_DEADLINE = 600.0


@dataclass(frozen=True)
class DatasetSource:
    """One downloadable dataset: mirrors (tried in order, https first), the MD5 and size
    in bytes of every file, class names, and the (height, width) of its images.

    A file is downloaded only when both its MD5 and its size are known: the size caps
    how much a mirror may send, the MD5 decides whether what it sent is kept."""

    name: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]
    classes: tuple[str, ...]
    home: str = ""
    sizes: dict[str, int] = field(default_factory=dict)
    image_size: tuple[int, int] = (28, 28)

    def file(self, split: str, kind: str) -> str:
        """The file name for ``split`` ("train"/"test") and ``kind`` ("images"/"labels")."""
        return FILES[f"{split}_{kind}"]


DATASET_SOURCES: dict[str, DatasetSource] = {
    "mnist": DatasetSource(
        name="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        sizes={
            "train-images-idx3-ubyte.gz": 9912422,
            "train-labels-idx1-ubyte.gz": 28881,
            "t10k-images-idx3-ubyte.gz": 1648877,
            "t10k-labels-idx1-ubyte.gz": 4542,
        },
        classes=tuple(str(d) for d in range(10)),
        home="http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": DatasetSource(
        name="fashion-mnist",
        mirrors=(
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        sizes={
            "train-images-idx3-ubyte.gz": 26421880,
            "train-labels-idx1-ubyte.gz": 29515,
            "t10k-images-idx3-ubyte.gz": 4422102,
            "t10k-labels-idx1-ubyte.gz": 5148,
        },
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        home="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "kmnist": DatasetSource(
        name="kmnist",
        mirrors=(
            "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
            "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        sizes={
            "train-images-idx3-ubyte.gz": 18165135,
            "train-labels-idx1-ubyte.gz": 29497,
            "t10k-images-idx3-ubyte.gz": 3041136,
            "t10k-labels-idx1-ubyte.gz": 5120,
        },
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        home="https://github.com/rois-codh/kmnist",
    ),
}


def data_dirs(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The user-provided data folders, in search order: ``data_dir``, then ``CNNLAB_DATA``."""
    dirs = [Path(data_dir).expanduser()] if data_dir is not None else []
    env = os.environ.get("CNNLAB_DATA", "")
    dirs += [Path(part).expanduser() for part in env.split(os.pathsep) if part.strip()]
    return dirs


def mirrors_for(source: DatasetSource, mirrors: Sequence[str] | None = None) -> list[str]:
    """Base URLs to try: the ``mirrors`` argument, else ``CNNLAB_MIRRORS``, else the source's."""
    if mirrors is None:
        env = os.environ.get("CNNLAB_MIRRORS", "")
        mirrors = [m.strip() for m in env.split(",") if m.strip()] or list(source.mirrors)
    return [m.replace("{name}", source.name) for m in mirrors]


def md5sum(path: Path) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


_verified: dict[tuple[str, int, int], str] = {}


def _cached_ok(path: Path, expected: str) -> bool:
    """True when the cached ``path`` has MD5 ``expected`` (remembered per path+mtime+size)."""
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _verified:
        _verified[key] = md5sum(path)
    return _verified[key] == expected


def _candidates(folder: Path, dataset: str, filename: str) -> list[Path]:
    names = [filename]
    if filename.endswith(".gz"):
        names.append(filename[: -len(".gz")])
    return [folder / sub / n for sub in (dataset, "") for n in names]


class _FetchFailed(Exception):
    """One mirror could not deliver a good copy; the message says why, briefly."""


def redirect_allowed(old: str, new: str) -> bool:
    """Whether a mirror may redirect ``old`` to ``new``: to https always, to plain http
    only from plain http (never a downgrade), to any other scheme never."""
    old_scheme = urllib.parse.urlsplit(old).scheme.lower()
    new_scheme = urllib.parse.urlsplit(new).scheme.lower()
    return new_scheme == "https" or (new_scheme == "http" and old_scheme == "http")


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow redirects only where :func:`redirect_allowed` says so."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        if not redirect_allowed(req.full_url, newurl):
            raise _FetchFailed(f"{req.full_url}: refused redirect to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_NoDowngrade)


def download_deadline() -> float:
    """Seconds one file's download may take in all: ``CNNLAB_DOWNLOAD_DEADLINE``, else
    :data:`DOWNLOAD_DEADLINE`."""
    env = os.environ.get("CNNLAB_DOWNLOAD_DEADLINE", "").strip()
    if not env:
        return DOWNLOAD_DEADLINE
    try:
        value = float(env)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise CnnlabError(
            f"CNNLAB_DOWNLOAD_DEADLINE={env!r}: expected a positive number of seconds"
        )
    return value


def _set_read_timeout(resp: http.client.HTTPResponse, seconds: float) -> None:
    """Shorten the socket's timeout so that one read cannot outlast the deadline."""
    sock = getattr(getattr(resp.fp, "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.01))


def _fetch(url: str, target: Path, md5: str, size: int, timeout: float, deadline: float) -> None:
    """Stream ``url`` to ``target`` through a temporary file, checking size and MD5.

    At most ``size`` bytes are accepted (a larger ``Content-Length`` is refused before
    reading, and reading stops at the first byte past it), the whole transfer must end
    within ``deadline`` seconds, and any failure removes the temporary file.
    """
    stop = time.monotonic() + deadline
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with (
            _opener.open(request, timeout=min(timeout, deadline)) as resp,
            atomic_path(target) as tmp,
        ):
            length = resp.headers.get("Content-Length")
            if length is not None and (not length.strip().isdigit() or int(length) != size):
                raise _FetchFailed(
                    f"{url}: Content-Length {length.strip()[:20]} but the file has {size} bytes"
                )
            print(
                f"cnnlab: downloading {url} ({size / 1e6:.1f} MB) -> {target}",
                file=sys.stderr,
                flush=True,
            )
            digest = hashlib.md5(usedforsecurity=False)
            got = 0
            with open(tmp, "wb") as out:
                while True:
                    left = stop - time.monotonic()
                    if left <= 0:
                        raise _FetchFailed(
                            f"{url}: deadline of {deadline:g} s passed after {got} of {size} bytes"
                        )
                    _set_read_timeout(resp, min(timeout, left))
                    # read1 returns what has arrived instead of waiting for a full chunk,
                    # so a mirror sending a byte at a time still meets the deadline check
                    chunk = resp.read1(min(_CHUNK, size + 1 - got))
                    if not chunk:
                        break
                    got += len(chunk)
                    if got > size:
                        raise _FetchFailed(f"{url}: sent more than the file's {size} bytes")
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != md5:
                raise _FetchFailed(f"{url}: MD5 mismatch ({got} of {size} bytes)")
    except urllib.error.HTTPError as exc:
        raise _FetchFailed(f"{url}: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise _FetchFailed(f"{url}: {exc.reason}") from None
    except TimeoutError:
        if time.monotonic() >= stop - 0.05:
            raise _FetchFailed(f"{url}: deadline of {deadline:g} s passed") from None
        raise _FetchFailed(f"{url}: no data for {timeout:g} s") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _FetchFailed(f"{url}: {type(exc).__name__} {exc}".strip()) from None


def locate(
    dataset: str,
    filename: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
    deadline: float | None = None,
) -> Path:
    """Return a local path for ``filename`` of ``dataset``, downloading it if allowed.

    A download waits at most ``timeout`` seconds for any one read and ``deadline``
    seconds (default :func:`download_deadline`) in all, per mirror. Raises :class:`CnnlabError` with one line naming the searched folders when the
    file is nowhere and cannot be downloaded.
    """
    source = DATASET_SOURCES.get(dataset)
    if source is None:
        raise CnnlabError(
            f"unknown dataset {dataset!r}; known: {', '.join(sorted(DATASET_SOURCES))}"
        )
    return locate_file(source, filename, data_dir, download, mirrors, timeout, deadline)


def locate_file(
    source: DatasetSource,
    filename: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
    deadline: float | None = None,
) -> Path:
    """:func:`locate` for a :class:`DatasetSource` that is not in :data:`DATASET_SOURCES`
    (a dataset of another file layout that still downloads like the IDX ones)."""
    dataset = source.name
    searched: list[Path] = []
    for folder in data_dirs(data_dir):
        searched += [folder / dataset, folder]
        for path in _candidates(folder, dataset, filename):
            if path.is_file():
                log.debug("%s: using %s", dataset, path)
                return path

    cached = cache_dir() / dataset / filename
    searched.append(cached.parent)
    expected = source.md5.get(filename)
    if cached.is_file():
        if expected is None or _cached_ok(cached, expected):
            log.debug("%s: using cached %s", dataset, cached)
            return cached
        print(f"cnnlab: {cached} is corrupt (MD5 mismatch); fetching it again", file=sys.stderr)
        cached.unlink()

    where = ", ".join(str(p) for p in searched)
    hint = (
        f"provide the files with --data-dir DIR or CNNLAB_DATA=DIR holding e.g. "
        f"DIR/{dataset}/{filename}"
    )
    if not download:
        raise CnnlabError(f"{dataset}: {filename} not found in {where} (download disabled); {hint}")
    size = source.sizes.get(filename)
    if expected is None or size is None:
        raise CnnlabError(
            f"{dataset}: {filename} not found in {where}, and it has no known checksum "
            f"and size to download it against; {hint}"
        )
    limit = download_deadline() if deadline is None else deadline
    failures: list[str] = []
    for base in mirrors_for(source, mirrors):
        url = base.rstrip("/") + "/" + filename
        try:
            _fetch(url, cached, expected, size, timeout, limit)
        except _FetchFailed as exc:
            failures.append(str(exc))
            continue
        return cached
    why = "; ".join(failures) or "no mirrors configured"
    raise CnnlabError(
        f"{dataset}: {filename} not found in {where} and download from the mirrors failed "
        f"({why}); {hint}"
    )
