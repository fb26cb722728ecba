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
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
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
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DatasetSource:
    """One downloadable dataset: mirrors (tried in order), MD5 per file, class names,
    and the (height, width) of its images."""

    name: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]
    classes: tuple[str, ...]
    home: str = ""
    image_size: tuple[int, int] = (28, 28)

    def file(self, split: str, kind: str) -> str:
        """The file name for ``split`` ("train"/"test") and ``kind`` ("images"/"labels")."""
        return FILES[f"{split}_{kind}"]


DATASET_SOURCES: dict[str, DatasetSource] = {
    "mnist": DatasetSource(
        name="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        classes=tuple(str(d) for d in range(10)),
        home="http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": DatasetSource(
        name="fashion-mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
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
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        md5={
            "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
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


def _fetch(url: str, target: Path, expected_md5: str | None, timeout: float) -> None:
    """Stream ``url`` to ``target`` through a temporary file, checking the MD5."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp, atomic_path(target) as tmp:
            size = resp.headers.get("Content-Length")
            note = f" ({int(size) / 1e6:.1f} MB)" if size and size.isdigit() else ""
            print(f"cnnlab: downloading {url}{note} -> {target}", file=sys.stderr, flush=True)
            digest = hashlib.md5(usedforsecurity=False)
            with open(tmp, "wb") as out:
                while chunk := resp.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if expected_md5 and digest.hexdigest() != expected_md5:
                raise _FetchFailed(f"{url}: MD5 mismatch")
    except urllib.error.HTTPError as exc:
        raise _FetchFailed(f"{url}: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise _FetchFailed(f"{url}: {exc.reason}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _FetchFailed(f"{url}: {type(exc).__name__} {exc}".strip()) from None


def locate(
    dataset: str,
    filename: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Return a local path for ``filename`` of ``dataset``, downloading it if allowed.

    Raises :class:`CnnlabError` with one line naming the searched folders when the
    file is nowhere and cannot be downloaded.
    """
    source = DATASET_SOURCES.get(dataset)
    if source is None:
        raise CnnlabError(
            f"unknown dataset {dataset!r}; known: {', '.join(sorted(DATASET_SOURCES))}"
        )
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
    failures: list[str] = []
    for base in mirrors_for(source, mirrors):
        url = base.rstrip("/") + "/" + filename
        try:
            _fetch(url, cached, expected, timeout)
        except _FetchFailed as exc:
            failures.append(str(exc))
            continue
        return cached
    why = "; ".join(failures) or "no mirrors configured"
    raise CnnlabError(
        f"{dataset}: {filename} not found in {where} and download from the mirrors failed "
        f"({why}); {hint}"
    )
