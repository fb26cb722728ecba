"""CIFAR-10's binary format: the genuine sample, synthetic batches, archives, downloads."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import json
import os
import shutil
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import cifar, clear_cache, load_dataset
from cnnlab.errors import CnnlabError

CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
SAMPLE = "cifar-10-binary-sample"
META_TEXT = "\n".join(CLASSES) + "\n\n"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No data folder but the test's own, a cache of its own, nothing loaded before."""
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    clear_cache()
    yield
    clear_cache()


def _batch_bytes(labels: np.ndarray, images: np.ndarray) -> bytes:
    """Records written byte by byte the way the format says: label, red, green, blue."""
    out = bytearray()
    for label, image in zip(labels, images, strict=True):
        out.append(int(label))
        for plane in range(3):
            for row in range(32):
                out += bytes(int(v) for v in image[plane, row])
    return bytes(out)


def _random_batch(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 10, n).astype(np.uint8), rng.integers(0, 256, (n, 3, 32, 32), np.uint8)


def _batch_folder(root: Path, n_train: int = 6, n_test: int = 4) -> Path:
    """``root/cifar-10-batches-bin/`` with data_batch_1.bin, test_batch.bin and the names."""
    folder = root / cifar.BATCH_DIR
    folder.mkdir(parents=True)
    (folder / "data_batch_1.bin").write_bytes(_batch_bytes(*_random_batch(n_train, 0)))
    (folder / "test_batch.bin").write_bytes(_batch_bytes(*_random_batch(n_test, 1)))
    (folder / "batches.meta.txt").write_text(META_TEXT)
    return folder


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", **changes: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in changes.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def _archive(path: Path, n_train: int = 6, n_test: int = 4) -> Path:
    """A cifar-10-binary.tar.gz with one train batch, the test batch and the names, plus
    members that must never be written: a ``..`` path, an absolute path, links."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "cifar-10-batches-bin/", type=tarfile.DIRTYPE)
        _add(tar, "cifar-10-batches-bin/data_batch_1.bin", _batch_bytes(*_random_batch(n_train, 0)))
        _add(tar, "cifar-10-batches-bin/test_batch.bin", _batch_bytes(*_random_batch(n_test, 1)))
        _add(tar, "cifar-10-batches-bin/batches.meta.txt", META_TEXT.encode())
        _add(tar, "../evil", b"x" * 3073)
        _add(tar, "cifar-10-batches-bin/../../evil", b"x" * 3073)
        _add(tar, str(path.parent / "absolute-evil"), b"x" * 3073)
        _add(tar, "cifar-10-batches-bin/data_batch_2.bin", type=tarfile.SYMTYPE, linkname="/etc")
        _add(
            tar,
            "cifar-10-batches-bin/data_batch_3.bin",
            type=tarfile.LNKTYPE,
            linkname="cifar-10-batches-bin/data_batch_1.bin",
        )
    return path


# --- the genuine sample ----------------------------------------------------------------------


# CNNLAB_DATA as the session has it (the autouse fixture removes it from each test).
_DATA_DIRS = [Path(p) for p in os.environ.get("CNNLAB_DATA", "").split(os.pathsep) if p.strip()]


@pytest.fixture
def sample_dir(tmp_path: Path) -> Path:
    """A data folder holding the genuine first 474 records of data_batch_1.bin, renamed
    to the name the train split reads (the repository holds no copy of it)."""
    samples = [
        d / SAMPLE for d in _DATA_DIRS if (d / SAMPLE / "data_batch_1.first474.bin").is_file()
    ]
    if not samples:
        pytest.skip(f"{SAMPLE}/ not in CNNLAB_DATA")
    folder = tmp_path / "data" / cifar.BATCH_DIR
    folder.mkdir(parents=True)
    shutil.copyfile(samples[0] / "data_batch_1.first474.bin", folder / "data_batch_1.bin")
    shutil.copyfile(samples[0] / "batches.meta.txt", folder / "batches.meta.txt")
    return tmp_path / "data"


def test_genuine_sample(sample_dir: Path) -> None:
    raw = (sample_dir / cifar.BATCH_DIR / "data_batch_1.bin").read_bytes()
    data = load_dataset("cifar10", "train", data_dir=sample_dir, download=False)
    assert len(data) == 474 == len(raw) // 3073
    assert data.images.shape == (474, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels.shape == (474,) and data.labels.dtype == torch.int64
    assert data.classes == CLASSES
    # Independently of numpy: the label is a record's first byte, then 1,024 bytes a colour.
    assert data.labels.tolist() == [raw[i * 3073] for i in range(474)]
    assert data.labels[:5].tolist() == [6, 9, 9, 4, 1]  # frog, truck, truck, deer, automobile
    first = data.images[0]
    assert [int(first[c, 0, 0]) for c in range(3)] == [raw[1], raw[1 + 1024], raw[1 + 2048]]
    last = 473 * 3073
    assert int(data.images[473, 1, 5, 7]) == raw[last + 1 + 1024 + 5 * 32 + 7]


# --- synthetic batches -------------------------------------------------------------------------


def test_channel_order(tmp_path: Path) -> None:
    folder = _batch_folder(tmp_path)
    planes = np.stack([np.full((32, 32), v, np.uint8) for v in (1, 2, 3)])
    other = np.stack([np.full((32, 32), v, np.uint8) for v in (200, 100, 50)])
    (folder / "test_batch.bin").write_bytes(
        _batch_bytes(np.array([3, 7]), np.stack([planes, other]))
    )
    data = load_dataset("cifar10", "test", data_dir=tmp_path, download=False)
    assert data.labels.tolist() == [3, 7]
    for channel, value in enumerate((1, 2, 3)):
        assert bool((data.images[0, channel] == value).all())
    for channel, value in enumerate((200, 100, 50)):
        assert bool((data.images[1, channel] == value).all())


def test_rows_are_row_major(tmp_path: Path) -> None:
    folder = _batch_folder(tmp_path)
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    image = np.stack([rows, cols, rows + 2 * cols]).astype(np.uint8)
    (folder / "test_batch.bin").write_bytes(_batch_bytes(np.array([0]), image[None]))
    data = load_dataset("cifar10", "test", data_dir=tmp_path, download=False)
    assert torch.equal(data.images[0], torch.from_numpy(image))
    assert int(data.images[0, 0, 3, 5]) == 3 and int(data.images[0, 1, 3, 5]) == 5


def test_train_reads_every_data_batch_present(tmp_path: Path) -> None:
    folder = _batch_folder(tmp_path, n_train=6)
    (folder / "data_batch_4.bin").write_bytes(_batch_bytes(*_random_batch(3, 4)))
    data = load_dataset("cifar-10", "train", data_dir=tmp_path / "", download=False)
    assert data.name == "cifar10" and len(data) == 9
    assert torch.equal(data.labels[6:], torch.from_numpy(_random_batch(3, 4)[0].astype(np.int64)))
    (folder / "data_batch_1.bin").unlink()
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(CnnlabError, match="data_batch_N.bin"):
        load_dataset("cifar10", "train", data_dir=tmp_path, download=False)


def test_cifar10_subfolder_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _batch_folder(tmp_path / "env" / "cifar10")
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "env"))
    assert len(load_dataset("cifar10", "test", download=False)) == 4


def test_truncated_file_is_one_line_naming_it(tmp_path: Path) -> None:
    folder = _batch_folder(tmp_path)
    path = folder / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CnnlabError) as err:
        load_dataset("cifar10", "test", data_dir=tmp_path, download=False)
    message = str(err.value)
    assert str(path) in message and "3,073" in message and "\n" not in message
    path.write_bytes(b"")
    with pytest.raises(CnnlabError, match="test_batch.bin"):
        load_dataset("cifar10", "test", data_dir=tmp_path, download=False)


def test_bad_label_is_refused(tmp_path: Path) -> None:
    folder = _batch_folder(tmp_path)
    labels, images = _random_batch(3, 5)
    labels[2] = 10
    (folder / "test_batch.bin").write_bytes(_batch_bytes(labels, images))
    with pytest.raises(CnnlabError, match=r"test_batch\.bin: label 10 in record 2"):
        load_dataset("cifar10", "test", data_dir=tmp_path, download=False)


def test_class_names_come_from_the_meta_file(tmp_path: Path) -> None:
    folder = _batch_folder(tmp_path)
    (folder / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(12)))
    data = load_dataset("cifar10", "test", data_dir=tmp_path, download=False)
    assert data.classes == tuple(f"c{i}" for i in range(12))
    (folder / "batches.meta.txt").unlink()
    with pytest.raises(CnnlabError, match=r"batches\.meta\.txt: not found"):
        load_dataset("cifar10", "test", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("layout", ["cifar-10-batches-py/data_batch_1", "cifar-10-python.tar.gz"])
def test_python_version_needs_the_binary_one(
    tmp_path: Path, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cifar10" / layout
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x80\x04 not to be unpickled")
    monkeypatch.setattr(cifar, "locate_file", _must_not_download)
    with pytest.raises(CnnlabError) as err:
        load_dataset("cifar10", "train", data_dir=tmp_path)
    message = str(err.value)
    assert "binary version" in message and "\n" not in message


def _must_not_download(*args: object, **kwargs: object) -> Path:
    raise AssertionError("no download where the python version was found")


# --- archives ----------------------------------------------------------------------------------


def test_archive_is_extracted_safely_once(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "data" / "cifar10" / cifar.ARCHIVE)
    train = load_dataset("cifar10", "train", data_dir=tmp_path / "data", download=False)
    test = load_dataset("cifar10", "test", data_dir=tmp_path / "data", download=False)
    # the symlink and hard link named data_batch_2/3.bin are not read: one batch of 6
    assert len(train) == 6 and len(test) == 4 and train.classes == CLASSES
    assert torch.equal(train.labels, torch.from_numpy(_random_batch(6, 0)[0].astype(np.int64)))
    extracted = tmp_path / "cache" / "cifar10" / cifar.BATCH_DIR
    assert sorted(p.name for p in extracted.iterdir()) == [
        ".extracted-from",
        "batches.meta.txt",
        "data_batch_1.bin",
        "test_batch.bin",
    ]
    assert sorted(p.name for p in (tmp_path / "cache" / "cifar10").iterdir()) == [cifar.BATCH_DIR]
    for evil in (tmp_path / "evil", tmp_path / "cache" / "evil", archive.parent / "absolute-evil"):
        assert not evil.exists()
    # a second process (here: a cleared in-process cache) reads the extraction as it is
    stamp = (extracted / "test_batch.bin").stat().st_mtime_ns
    clear_cache()
    assert len(load_dataset("cifar10", "test", data_dir=tmp_path / "data", download=False)) == 4
    assert (extracted / "test_batch.bin").stat().st_mtime_ns == stamp
    # another archive replaces the extraction
    _archive(archive, n_test=2)
    clear_cache()
    assert len(load_dataset("cifar10", "test", data_dir=tmp_path / "data", download=False)) == 2


def test_oversized_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / cifar.ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, "cifar-10-batches-bin/batches.meta.txt", b"a\n" * 5000)
    with pytest.raises(CnnlabError, match="over the 4096"):
        load_dataset("cifar10", "test", data_dir=tmp_path, download=False)
    assert not (tmp_path / "cache" / "cifar10" / cifar.BATCH_DIR).exists()


def test_damaged_archive_is_one_line(tmp_path: Path) -> None:
    (tmp_path / cifar.ARCHIVE).write_bytes(b"\x1f\x8b\x08 not really gzip")
    with pytest.raises(CnnlabError, match="cannot extract") as err:
        load_dataset("cifar10", "test", data_dir=tmp_path, download=False)
    assert "\n" not in str(err.value)


# --- downloads ---------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt: str, *args: object) -> None:
        pass


@pytest.fixture
def served_archive(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server with a built archive at ``BASE/good/cifar-10-binary.tar.gz``."""
    root = tmp_path / "www"
    archive = _archive(root / "good" / cifar.ARCHIVE)
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", archive
    finally:
        httpd.shutdown()
        httpd.server_close()


def _patch_source(monkeypatch: pytest.MonkeyPatch, archive: Path, md5: str | None = None) -> None:
    digest = md5 or hashlib.md5(archive.read_bytes()).hexdigest()
    patched = dataclasses.replace(
        cifar.SOURCE,
        md5={cifar.ARCHIVE: digest},
        sizes={cifar.ARCHIVE: archive.stat().st_size},
    )
    monkeypatch.setattr(cifar, "SOURCE", patched)


def test_download_then_cache(
    served_archive: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, archive = served_archive
    _patch_source(monkeypatch, archive)
    monkeypatch.setenv("CNNLAB_MIRRORS", f"{base}/missing/,{base}/good/")
    data = load_dataset("cifar10", "train", data_dir=tmp_path / "empty")
    assert len(data) == 6 and data.classes == CLASSES
    cached = tmp_path / "cache" / "cifar10" / cifar.ARCHIVE
    assert cached.read_bytes() == archive.read_bytes()
    # the server gone, a fresh load reads the cached archive's extraction
    monkeypatch.setenv("CNNLAB_MIRRORS", "http://127.0.0.1:9/")
    archive.unlink()
    clear_cache()
    assert len(load_dataset("cifar10", "test", data_dir=tmp_path / "empty")) == 4


def test_download_with_wrong_md5_is_refused(
    served_archive: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, archive = served_archive
    _patch_source(monkeypatch, archive, md5="0" * 32)
    monkeypatch.setenv("CNNLAB_MIRRORS", f"{base}/good/")
    with pytest.raises(CnnlabError, match="MD5 mismatch") as err:
        load_dataset("cifar10", "train")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache" / "cifar10" / cifar.ARCHIVE).exists()


def test_official_archive_is_known() -> None:
    assert cifar.SOURCE.md5 == {cifar.ARCHIVE: "c32a1d4ab5d03f1284b67883e8d87530"}
    assert cifar.SOURCE.sizes == {cifar.ARCHIVE: 170_052_171}
    assert cifar.SOURCE.mirrors[0] == "https://www.cs.toronto.edu/~kriz/"


# --- training ------------------------------------------------------------------------------------


def test_cli_trains_on_cifar10_in_colour(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cnnlab.cli import main
    from cnnlab.runs import load_run

    _batch_folder(tmp_path / "data", n_train=64, n_test=32)
    run = tmp_path / "run"
    argv = ["train", "--model", "seed000-cnn", "--dataset", "cifar10", "--epochs", "1"]
    code = main([*argv, "--data-dir", str(tmp_path / "data"), "--out", str(run), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert 0 <= json.loads(out)["test_accuracy"] <= 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 1
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == "cifar10" and config["classes"] == list(CLASSES)
    assert config["model"]["args"]["in_channels"] == 3
    assert config["preprocess"]["input_size"] == [3, 28, 28]
    loaded = load_run(run)
    first = next(m for m in loaded.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 3
    test = load_dataset("cifar10", "test", data_dir=tmp_path / "data")
    assert loaded.predict(test.images[:5]).shape == (5, 10)
    assert main(["summary", str(run)]) == 0
    capsys.readouterr()
    # resuming rebuilds the colour model from the run folder
    code = main(
        ["train", "--resume", str(run), "--epochs", "1", "--data-dir", str(tmp_path / "data")]
    )
    assert code == 0, capsys.readouterr().err
    assert len(json.loads((run / "history.json").read_text())) == 2


def test_cli_error_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cnnlab.cli import main

    folder = _batch_folder(tmp_path)
    (folder / "data_batch_1.bin").write_bytes(b"\0" * 3000)
    code = main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "data_batch_1.bin" in err and len(err.strip().splitlines()) == 1
