"""Folders of images larger than memory: read from the memory-mapped decode cache batch by
batch, with the same results as whole in memory, and a cache entry written atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import folders
from cnnlab.data.folders import STREAM_ENV, FolderSettings, load_folder, stream_threshold
from cnnlab.data.loader import Preprocess, TensorBatches
from cnnlab.data.mapped import MappedImages
from cnnlab.errors import CnnlabError
from tests.conftest import write_photo_folder

SETTINGS = FolderSettings(size=(8, 8))


def _npy(tmp_path: Path, n: int = 10) -> tuple[MappedImages, torch.Tensor]:
    x = np.random.default_rng(0).integers(0, 256, (n, 3, 4, 5), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    return MappedImages(tmp_path / "x.npy"), torch.from_numpy(x)


def test_mapped_images_index_like_a_tensor(tmp_path: Path) -> None:
    mapped, x = _npy(tmp_path)
    assert len(mapped) == 10 and mapped.shape == x.shape and mapped.dim() == 4
    assert mapped.dtype == torch.uint8 and mapped.nbytes == x.numel()
    assert mapped[3].equal(x[3]) and mapped[-1].equal(x[-1])
    assert mapped[2:7].equal(x[2:7]) and mapped[::3].equal(x[::3]) and mapped[:].equal(x)
    idx = torch.tensor([7, 1, 1, 9, 0])
    assert mapped[idx].equal(x[idx])  # any order, repeats included
    mask = torch.arange(10) % 3 == 0
    assert mapped[mask].equal(x[mask])
    assert mapped[idx, 0].equal(x[idx, 0]) and mapped[4, 1].equal(x[4, 1])
    with pytest.raises(IndexError):
        mapped[10]
    # a subset is a view over the same file; a subset of it too
    part = mapped.subset(np.array([9, 2, 5, 6]))
    assert len(part) == 4 and part[:].equal(x[[9, 2, 5, 6]])
    assert part.subset([3, 0])[:].equal(x[[6, 9]]) and part[1:3].equal(x[[2, 5]])


def test_mapped_reads_hand_pages_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnlab.data import mapped as module

    mapped, x = _npy(tmp_path, n=40)
    released = []
    real = module._Mapping.release
    monkeypatch.setattr(module._Mapping, "release", lambda self: released.append(real(self)))
    monkeypatch.setattr(module, "RELEASE_BYTES", 4 * 60)  # four rows
    assert mapped[np.arange(3)].equal(x[:3]) and not released
    assert mapped[np.arange(3, 6)].equal(x[3:6]) and len(released) == 1
    assert mapped[10:30].equal(x[10:30]) and len(released) == 2
    assert mapped[:].equal(x)  # still readable after its pages went


@pytest.mark.parametrize("augment", [None, lambda b: b.flip(-1)])
def test_batches_from_a_file_equal_batches_from_a_tensor(tmp_path: Path, augment) -> None:
    mapped, x = _npy(tmp_path, n=37)
    labels = torch.arange(37) % 4
    pre = Preprocess((3, 4, 5), "resize", 0.5, 0.25)
    part = np.array([3, 30, 7, 11, 0, 12, 36, 5, 19, 20, 21, 2, 33])
    for images, want in ((mapped, x), (mapped.subset(part), x[part])):
        ys = labels[: len(want)]
        kw = dict(shuffle=True, seed=5, augment=augment)
        a = TensorBatches(images, ys, 4, pre, **kw)
        b = TensorBatches(want, ys, 4, pre, **kw)
        for epoch in (0, 1):
            a.set_epoch(epoch)
            b.set_epoch(epoch)
            got, expected = list(a), list(b)
            assert len(got) == len(expected) == len(a)
            for (xa, ya), (xb, yb) in zip(got, expected, strict=True):
                assert xa.equal(xb) and ya.equal(yb)


def test_streamed_load_holds_views_of_the_same_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_photo_folder(tmp_path / "d", per_class=6)
    train, test = load_folder(root, SETTINGS, progress=False, stream=False)
    s_train, s_test = load_folder(root, SETTINGS, progress=False, stream=True)
    assert isinstance(s_train.images, MappedImages) and isinstance(s_test.images, MappedImages)
    assert s_train.images.path == s_test.images.path  # the held-out split: indices, no copy
    assert s_train.images[:].equal(train.images) and s_test.images[:].equal(test.images)
    assert s_train.labels.equal(train.labels) and s_test.labels.equal(test.labels)
    # the threshold decides when neither is asked for
    monkeypatch.setenv(STREAM_ENV, "0")
    assert isinstance(load_folder(root, SETTINGS, progress=False)[0].images, MappedImages)
    monkeypatch.setenv(STREAM_ENV, str(10**12))
    assert isinstance(load_folder(root, SETTINGS, progress=False)[0].images, torch.Tensor)


def test_streamed_train_and_test_folders(tmp_path: Path) -> None:
    write_photo_folder(tmp_path / "d" / "train", per_class=4)
    write_photo_folder(tmp_path / "d" / "val", per_class=2, size=(5, 13))
    train, test = load_folder(tmp_path / "d", SETTINGS, progress=False, stream=False)
    s_train, s_test = load_folder(tmp_path / "d", SETTINGS, progress=False, stream=True)
    assert s_train.images.path != s_test.images.path
    assert s_train.images[:].equal(train.images) and s_test.images[:].equal(test.images)
    assert s_test.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_threshold_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STREAM_ENV, "123")
    assert stream_threshold() == 123
    monkeypatch.delenv(STREAM_ENV)
    free = folders.available_memory()
    assert free is None or stream_threshold() == int(folders.STREAM_FRACTION * free)
    for bad in ("lots", "-1"):
        monkeypatch.setenv(STREAM_ENV, bad)
        with pytest.raises(CnnlabError, match=STREAM_ENV):
            stream_threshold()


def _train(root: Path, out: Path, monkeypatch: pytest.MonkeyPatch, above: str) -> Path:
    from cnnlab.cli import main

    monkeypatch.setenv(STREAM_ENV, above)
    argv = [
        "train",
        "--data",
        str(root),
        "--model",
        "seed000-cnn",
        "--epochs",
        "2",
        "--threads",
        "1",
    ]
    code = main([*argv, "--image-size", "16", "--batch-size", "5", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_streamed_training_equals_training_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    root = write_photo_folder(tmp_path / "shapes", per_class=12)
    whole = _train(root, tmp_path / "whole", monkeypatch, str(10**12))
    streamed = _train(root, tmp_path / "streamed", monkeypatch, "0")
    from safetensors.torch import load_file

    a = load_file(whole / "weights.safetensors")
    b = load_file(streamed / "weights.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    ha = json.loads((whole / "history.json").read_text())
    hb = json.loads((streamed / "history.json").read_text())
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in ha] == [
        {k: v for k, v in r.items() if k not in drop} for r in hb
    ]
    assert ha[-1]["val_loss"] > 0  # the validation split was used
    ma = json.loads((whole / "metrics.json").read_text())
    mb = json.loads((streamed / "metrics.json").read_text())
    assert (ma["test_loss"], ma["test_accuracy"], ma["test_samples"]) == (
        mb["test_loss"],
        mb["test_accuracy"],
        mb["test_samples"],
    )
    # evaluate reads the run's held-out split from the file too
    from cnnlab.cli import main

    code = main(["evaluate", str(streamed), "--out", str(tmp_path / "reports")])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "reports" / "evaluation.json").read_text())
    code = main(["plot", str(streamed), "--out", str(tmp_path / "plots")])
    assert code == 0, capsys.readouterr().err


def test_entry_rows_without_the_skipped_files(tmp_path: Path) -> None:
    root = write_photo_folder(tmp_path / "d", per_class=3)
    (root / "apples" / "01b.png").write_text("not a picture\n")
    (root / "sky" / "99.jpg").write_bytes(b"\xff\xd8\xff")
    good = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in ("01b.png", "99.jpg"))
    good.sort(key=lambda p: (p.parent.name, p))
    want = np.stack([folders.decode_file(p, SETTINGS, str(p)) for p in good])
    train, test = load_folder(root, SETTINGS, progress=False, stream=True)
    entry = train.images.path.parent
    assert np.array_equal(np.load(entry / "images.npy"), want)
    assert np.load(entry / "labels.npy").tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len(json.loads((entry / "meta.json").read_text())["skipped"]) == 2
    assert [p.name for p in entry.iterdir()] != [] and not list(entry.glob("*.part.npy"))


CRASH = r"""
import os, sys
from cnnlab.data import folders
real, seen = folders.decode_file, []
def dying(*args, **kw):
    seen.append(1)
    if len(seen) == int(sys.argv[2]):
        os._exit(9)  # killed: no clean-up runs
    return real(*args, **kw)
folders.decode_file = dying
folders.load_folder(sys.argv[1], folders.FolderSettings(size=(8, 8)), progress=False)
"""


def test_a_crash_while_writing_leaves_no_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_photo_folder(tmp_path / "d", per_class=4)
    cache = Path(os.environ["CNNLAB_CACHE"]) / "folders"
    env = {**os.environ, "PYTHONPATH": str(Path(folders.__file__).parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", CRASH, str(root), "7"], env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 9, done.stderr
    left = list(cache.iterdir())
    assert len(left) == 1 and left[0].name.endswith(".tmp")  # half written, never read
    assert (left[0] / "images.npy").is_file() and not (left[0] / "meta.json").exists()
    # an exception half-way removes its temporary folder; the dead process's goes too
    monkeypatch.setattr(folders, "decode_file", _failing_after(5))
    with pytest.raises(RuntimeError):
        load_folder(root, SETTINGS, progress=False)
    assert list(cache.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setenv("CNNLAB_CACHE", str(cache.parent))
    train, test = load_folder(root, SETTINGS, progress=False, stream=True)
    assert len(train) + len(test) == 12
    entries = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and train.images.path.parent == entries[0]
    whole, whole_test = load_folder(root, SETTINGS, progress=False, stream=False)
    assert train.images[:].equal(whole.images) and test.images[:].equal(whole_test.images)


def test_only_temporary_entries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "folders"
    folder.mkdir()
    alive = folder / f"{folders._temp_prefix('k' * 64)}abc.tmp"  # this process
    host = folders.socket.gethostname()
    dead_pid = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    dead = folder / f".{'k' * 64}.{host}.{dead_pid}.xyz.tmp"
    elsewhere = folder / f".{'k' * 64}.other-machine.{dead_pid}.xyz.tmp"
    odd = folder / ".not.ours.tmp"
    for path in (alive, dead, elsewhere, odd):
        path.mkdir()
        (path / "images.npy").write_bytes(b"half")
    folders._remove_dead_temps(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in (alive, elsewhere, odd)
    )


def _failing_after(n: int):
    real, seen = folders.decode_file, []

    def failing(*args, **kw):
        seen.append(1)
        if len(seen) == n:
            raise RuntimeError("stopped half-way")
        return real(*args, **kw)

    return failing


def test_a_damaged_entry_is_decoded_again(tmp_path: Path) -> None:
    root = write_photo_folder(tmp_path / "d", per_class=3)
    train, _ = load_folder(root, SETTINGS, progress=False, stream=True)
    entry = train.images.path.parent
    want = np.load(entry / "images.npy")
    (entry / "images.npy").write_bytes(b"\x93NUMPY damaged")
    again, _ = load_folder(root, SETTINGS, progress=False, stream=False)
    assert np.array_equal(np.load(entry / "images.npy"), want)
    assert again.images.equal(torch.from_numpy(want)[train.images._rows])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: decoding stays in-process")
def test_parallel_decoding_hands_out_chunks_as_they_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_photo_folder(tmp_path / "d", per_class=7)
    (root / "leaves" / "03b.png").write_text("not a picture\n")
    serial, serial_test = load_folder(root, SETTINGS, progress=False, stream=False)
    monkeypatch.setattr(folders, "PARALLEL_FROM", 1)
    monkeypatch.setattr(folders, "CHUNK", 2)
    monkeypatch.setattr(folders, "AHEAD", 1)  # 11 chunks, 2 handed out at a time
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "other-cache"))
    parallel, parallel_test = load_folder(root, SETTINGS, progress=False, stream=True)
    assert parallel.images[:].equal(serial.images) and parallel.labels.equal(serial.labels)
    assert parallel_test.images[:].equal(serial_test.images)
