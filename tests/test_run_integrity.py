"""Run folders check what they read: checksums, checkpoint structure, recovery after a crash."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnlab import CnnlabError
from cnnlab.config import TrainConfig
from cnnlab.runs import load_run, train_run

RUN_FILES = ("config.json", "weights.safetensors", "checkpoint.pt", "history.json", "metrics.json")


def _config(epochs: int = 2) -> TrainConfig:
    return TrainConfig(model="seed004-lenet-max", dataset="digits", epochs=epochs, batch_size=64)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-epoch seed004-lenet-max run on `digits`, never modified (tests copy it)."""
    out = tmp_path_factory.mktemp("integrity") / "run"
    train_run(_config(), out, progress=False)
    return out


@pytest.fixture
def run(small_run: Path, tmp_path: Path) -> Path:
    """A private copy of the small run."""
    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    return copy


def reseal(folder: Path) -> None:
    """Record the folder's current files in its checksums, as if they had been written so."""
    files = {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in RUN_FILES
        if (folder / name).exists()
    }
    (folder / "checksums.json").write_text(json.dumps({"format": 1, "files": files}))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def flip(path: Path, count: int = 10) -> None:
    data = bytearray(path.read_bytes())
    step = max(1, len(data) // (count + 1))
    for i in range(1, count + 1):
        data[i * step] ^= 0x01
    path.write_bytes(bytes(data))


class Marker:
    """An object a safe checkpoint loader must refuse to build."""


def _resume(folder: Path, more: int | None = None):
    return train_run(TrainConfig(), resume=folder, more_epochs=more, progress=False)


# ----------------------------------------------------------------- checksums
def test_every_file_is_recorded_in_the_checksums(run: Path) -> None:
    manifest = json.loads((run / "checksums.json").read_text())
    for name in RUN_FILES:
        digest = hashlib.sha256((run / name).read_bytes()).hexdigest()
        assert manifest["files"][name] == digest


def test_flipped_checkpoint_bytes_are_refused_on_resume(run: Path) -> None:
    flip(run / "checkpoint.pt")
    before = snapshot(run)
    with pytest.raises(CnnlabError, match=r"checkpoint\.pt.*checksum"):
        _resume(run, 1)
    assert snapshot(run) == before


def test_a_json_file_changed_in_place_is_refused(run: Path) -> None:
    # still valid JSON, a different figure: only the checksum can tell
    for name in ("config.json", "history.json", "metrics.json"):
        damaged = run.parent / f"damaged-{name}"
        shutil.copytree(run, damaged)
        text = (damaged / name).read_text()
        (damaged / name).write_text(text.replace("2", "3", 1))
        with pytest.raises(CnnlabError, match=rf"{name}.*checksum"):
            load_run(damaged)


@pytest.mark.parametrize("name", RUN_FILES)
def test_flipped_bytes_in_each_file_are_refused(run: Path, name: str) -> None:
    flip(run / name)
    with pytest.raises(CnnlabError, match=rf"{name.replace('.', '[.]')}") as info:
        if name == "checkpoint.pt":
            _resume(run, 1)
        else:
            load_run(run)
    assert "\n" not in str(info.value)


def test_a_folder_without_checksums_still_loads_and_says_so(run: Path, capsys) -> None:
    (run / "checksums.json").unlink()
    assert load_run(run).classes
    assert "checksums.json" in capsys.readouterr().err


# ------------------------------------------------- validate before writing
def _damage_checkpoint(run: Path, change) -> None:
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    change(state)
    torch.save(state, run / "checkpoint.pt")
    reseal(run)


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.pop("step"),
        lambda s: s.pop("optimizer"),
        lambda s: s.update(epoch="two"),
        lambda s: s.update(history={"loss": 1}),
        lambda s: s.update(torch_rng=torch.zeros(3)),
        lambda s: s["model"].update({k: v.t() for k, v in s["model"].items() if v.dim() == 2}),
        lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(3)),
    ],
    ids=["no-step", "no-optimizer", "string-epoch", "bad-history", "bad-rng", "shapes", "adam"],
)
def test_a_bad_checkpoint_is_refused_before_anything_is_written(run: Path, change) -> None:
    _damage_checkpoint(run, change)
    before = snapshot(run)
    with pytest.raises(CnnlabError, match=r"checkpoint\.pt") as info:
        _resume(run, 1)
    assert "\n" not in str(info.value)
    assert snapshot(run) == before


def test_a_bad_config_or_history_is_refused_before_anything_is_written(run: Path) -> None:
    for name, change in (
        ("config.json", lambda d: d["train"].update(epochs="three")),
        ("config.json", lambda d: d.update(train=[1, 2])),
        ("history.json", lambda d: [1, 2]),
        ("history.json", lambda d: {"epoch": 1}),
    ):
        damaged = run.parent / "damaged"
        shutil.rmtree(damaged, ignore_errors=True)
        shutil.copytree(run, damaged)
        data = json.loads((damaged / name).read_text())
        new = change(data)
        (damaged / name).write_text(json.dumps(data if new is None else new))
        reseal(damaged)
        before = snapshot(damaged)
        with pytest.raises(CnnlabError, match=name.replace(".", "[.]")):
            _resume(damaged, 1)
        assert snapshot(damaged) == before


def test_the_checkpoint_error_is_short_and_never_suggests_unsafe_loading(run: Path) -> None:
    torch.save({"epoch": Marker()}, run / "checkpoint.pt")
    reseal(run)
    with pytest.raises(CnnlabError) as info:
        _resume(run, 1)
    message = str(info.value)
    assert "checkpoint.pt" in message and len(message) < 300
    assert "weights_only=False" not in message and "weights_only" not in message


# --------------------------------------------------------- crash recovery
def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "weights.safetensors"))


def test_killed_before_the_first_checkpoint_restarts_from_scratch(
    small_run: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "early"
    folder.mkdir()
    shutil.copy(small_run / "config.json", folder / "config.json")
    reseal(folder)
    result = _resume(folder)
    assert result.trainer.epoch == 2
    a, b = _weights(small_run), _weights(folder)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (folder / "metrics.json").exists()


def test_killed_before_metrics_evaluates_and_writes_them(small_run: Path, run: Path) -> None:
    (run / "metrics.json").unlink()
    (run / "history.json").write_text("[]")  # killed before the last history write too
    reseal(run)
    result = _resume(run)
    metrics = json.loads((run / "metrics.json").read_text())
    expected = json.loads((small_run / "metrics.json").read_text())
    assert metrics["test_accuracy"] == expected["test_accuracy"] == result.metrics["test_accuracy"]
    assert [int(h["epoch"]) for h in json.loads((run / "history.json").read_text())] == [1, 2]
    assert (run / "weights.safetensors").read_bytes() == (
        small_run / "weights.safetensors"
    ).read_bytes()
    with pytest.raises(CnnlabError, match="give --epochs"):
        _resume(run)


def test_stale_temporary_files_are_removed_on_resume(run: Path) -> None:
    stale = [run / ".checkpoint.pt.abcd1234.tmp", run / ".checksums.json.x_y9zz00.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    keep = run / "notes.tmp"
    keep.write_text("the user's own file")
    _resume(run, 1)
    assert not any(p.exists() for p in stale)
    assert keep.read_text() == "the user's own file"
