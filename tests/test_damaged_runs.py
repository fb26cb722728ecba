"""A finished run folder damaged every way: load, evaluate, predict and resume each either
work (where the damage is harmless) or stop with one line naming the file.

Never a traceback, never code from a pickle, and the folder's other files are left as
they were. Each file of the folder is deleted, emptied, truncated, flipped, replaced by a
directory, by JSON of the wrong type or by a malicious pickle; the content damages are
tried as found and "resealed" (the checksums rewritten to match, as a careless or hostile
editor would), so that the parsers behind the checksum check are tested too. Seeded
mutators add random flips and cuts; ``CNNLAB_FUZZ=full`` runs many more of them.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab import CnnlabError
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.runs import load_run, train_run
from tests.fuzzing import cases

pytestmark = pytest.mark.fuzz

RUN_FILES = ("config.json", "weights.safetensors", "checkpoint.pt", "history.json", "metrics.json")
FILES = (*RUN_FILES, "checksums.json")
MARKER = "pickle-was-run"


class Evil:
    """Unpickling this creates a marker file: proof that a loader ran pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _reseal(folder: Path) -> None:
    files = {
        n: hashlib.sha256((folder / n).read_bytes()).hexdigest()
        for n in RUN_FILES
        if (folder / n).is_file()
    }
    (folder / "checksums.json").write_text(json.dumps({"format": 1, "files": files}))


def _flip(rng: random.Random) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = bytearray(path.read_bytes())
        for _ in range(rng.randint(1, 10)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))

    return damage


def _cut(rng: random.Random) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: rng.randrange(len(data))])

    return damage


def _insert(rng: random.Random) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = path.read_bytes()
        at = rng.randrange(len(data) + 1)
        path.write_bytes(data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:])

    return damage


def _delete(path: Path) -> None:
    path.unlink()


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("x")


def _wrong_json(path: Path) -> None:
    path.write_text(json.dumps([1, "two", {"three": None}]))


def _pickle(path: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps({"epoch": Evil(path.parent.parent / MARKER)}))


def _torch_pickle(path: Path) -> None:
    import torch

    torch.save({"epoch": 1, "model": Evil(path.parent.parent / MARKER)}, path)


FIXED: dict[str, Callable[[Path], None]] = {
    "deleted": _delete,
    "emptied": _empty,
    "directory": _directory,
    "wrong-json": _wrong_json,
    "pickle": _pickle,
    "torch-pickle": _torch_pickle,
}
RESEALED = ("emptied", "wrong-json", "pickle", "torch-pickle")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished two-epoch run (never modified) and a digit image to predict."""
    root = tmp_path_factory.mktemp("damaged")
    train_run(
        TrainConfig(model="seed004-lenet-max", dataset="digits", epochs=1, batch_size=64),
        root / "run",
        progress=False,
    )
    image = root / "digit.png"
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(image)
    return root / "run", image


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name in FILES and p.is_file()}


def _attempts(run: Path, image: Path, capsys) -> list[tuple[str, int, str]]:
    """Each way of using the folder: (what, 0 or 2, the error line). A failed attempt
    must leave the folder's files as they were."""
    results = []
    for what, call in (
        ("load", lambda: load_run(run)),
        ("resume", lambda: train_run(TrainConfig(), resume=run, progress=False)),
        ("evaluate", lambda: _cli(["evaluate", str(run), "--no-reports"], capsys)),
        ("predict", lambda: _cli(["predict", str(run), str(image)], capsys)),
    ):
        before = _snapshot(run)
        try:
            outcome = call()
            rc, message = outcome if isinstance(outcome, tuple) else (0, "")
        except CnnlabError as exc:
            rc, message = 2, str(exc)
        if rc:
            assert _snapshot(run) == before, f"{what} failed and changed the folder: {message}"
        results.append((what, rc, message))
    return results


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(args)
    err = capsys.readouterr().err.strip()
    return rc, (err.splitlines()[-1] if rc and err else "")


def _check(run: Path, image: Path, name: str, label: str, capsys) -> int:
    outcomes = _attempts(run, image, capsys)
    assert not (run.parent / MARKER).exists(), f"{label}: a pickle ran"
    for what, rc, message in outcomes:
        if what == "resume" and rc == 2 and "has finished" in message:
            continue
        if rc:
            assert rc == 2 and "\n" not in message, f"{label} {what}: {message}"
            named = name in message or "checksums.json" in message
            assert named, f"{label} {what}: error does not name {name}: {message}"
    return len(outcomes)


def _copy(finished: tuple[Path, Path], tmp_path: Path, label: str) -> Path:
    run = tmp_path / label / "run"
    shutil.copytree(finished[0], run)
    return run


@pytest.mark.parametrize("name", FILES)
def test_each_file_damaged_each_way(finished, tmp_path: Path, capsys, name: str) -> None:
    ran = 0
    for label, damage in FIXED.items():
        for reseal in (False, True) if label in RESEALED and name != "checksums.json" else (False,):
            tag = f"{name}-{label}{'-resealed' if reseal else ''}"
            run = _copy(finished, tmp_path, tag)
            damage(run / name)
            if reseal:
                _reseal(run)
            ran += _check(run, finished[1], name, tag, capsys)
    assert ran >= 4 * len(FIXED)


def test_seeded_byte_damage(finished, tmp_path: Path, capsys) -> None:
    rng = random.Random(1129)
    n = cases(6, 300)
    ran = 0
    for i in range(n):
        name = rng.choice(FILES)
        mutate = rng.choice((_flip, _cut, _insert))(rng)
        reseal = name != "checksums.json" and rng.random() < 0.5
        tag = f"case{i}-{name}-{mutate.__qualname__.split('.')[0]}{'-resealed' if reseal else ''}"
        run = _copy(finished, tmp_path, tag)
        mutate(run / name)
        if reseal:
            _reseal(run)
        ran += _check(run, finished[1], name, tag, capsys)
        shutil.rmtree(run.parent)
    print(f"\ndamaged run folders: {n} seeded byte damages, {ran} attempts, no traceback")
    assert ran == 4 * n


def test_harmless_damage_is_harmless(finished, tmp_path: Path, capsys) -> None:
    run = _copy(finished, tmp_path, "harmless")
    stale = run / ".checkpoint.pt.k2j4h5g6.tmp"
    stale.write_bytes(b"half a checkpoint")
    (run / "notes.txt").write_text("the user's own file")
    outcomes = _attempts(run, finished[1], capsys)
    assert [(w, rc) for w, rc, _ in outcomes] == [
        ("load", 0),
        ("resume", 2),  # finished: asks for --epochs
        ("evaluate", 0),
        ("predict", 0),
    ]
    assert not stale.exists() and (run / "notes.txt").exists()
    # without checksums (a folder from an older cnnlab) everything still works
    (run / "checksums.json").unlink()
    assert [rc for _, rc, _ in _attempts(run, finished[1], capsys)] == [0, 2, 0, 0]
