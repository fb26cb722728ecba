"""benchmarks/folder_epoch.py without TensorFlow: the --limit copy, the option checks,
and a whole run with a stand-in for the Keras script."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def folder_epoch(monkeypatch: pytest.MonkeyPatch):
    """The benchmark module, imported as ``python benchmarks/folder_epoch.py`` would."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import folder_epoch

    return folder_epoch


def _photos(root: Path, per_class: int, splits=("train", "test")) -> Path:
    """Class folders of 16×16 PNGs coloured by class, under each split (or directly)."""
    for split in splits or ("",):
        for name, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                shade = tuple(max(0, c - 7 * i) for c in colour)
                Image.new("RGB", (16, 16), shade).save(folder / f"{i:03d}.png")
    return root


def test_limit_copies_the_first_images_of_every_class_and_split(
    folder_epoch, tmp_path: Path
) -> None:
    data = _photos(tmp_path / "photos", per_class=5)
    (data / "train" / "red" / "notes.txt").write_text("not an image")
    small = folder_epoch.make_limited_folder(data, 3, tmp_path / "work")
    assert small.name == "photos"
    for split in ("train", "test"):
        for name in ("red", "blue"):
            copied = sorted(p.name for p in (small / split / name).iterdir())
            assert copied == ["000.png", "001.png", "002.png"]
    assert folder_epoch.read_all(small)[0] == 12


def test_limit_on_a_folder_of_classes(folder_epoch, tmp_path: Path) -> None:
    data = _photos(tmp_path / "flat", per_class=4, splits=())
    small = folder_epoch.make_limited_folder(data, 2, tmp_path / "work")
    assert sorted(p.name for p in small.iterdir()) == ["blue", "red"]
    assert len(list((small / "red").iterdir())) == 2


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--widths", "32,64"], "--widths must be three whole numbers"),
        (["--widths", "a,b,c"], "--widths must be three whole numbers"),
        (["--runs", "0"], "--runs must be at least 1"),
        (["--keras-python", "/nowhere/python"], "no Keras interpreter at /nowhere/python"),
    ],
)
def test_bad_options_are_one_line_errors(
    folder_epoch, tmp_path: Path, capsys, option: list[str], message: str
) -> None:
    data = _photos(tmp_path / "photos", per_class=1)
    with pytest.raises(SystemExit) as exc:
        folder_epoch.parse_args(["--data", str(data), "--keras-python", sys.executable, *option])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


FAKE_KERAS = """\
import json, sys
args = sys.argv[1:]
assert args[args.index("--widths") + 1] == "4,8,8", args
# the recipe both sides share: the same batch and cifar-net's schedule
assert args[args.index("--batch-size") + 1] == "4", args
assert args[args.index("--schedule") + 1] == "triangle", args
print("TensorFlow's chatter")
print(json.dumps({"framework": "keras", "tf_version": "0", "keras_version": "0",
                  "epoch_seconds": [4.0, 2.0], "test_accuracy": 0.25}))
"""


def test_a_whole_run_against_a_stand_in_for_keras(
    folder_epoch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("CNNLAB_NATIVE", "0")  # no kernel build in every fresh cache
    data = _photos(tmp_path / "photos", per_class=6)
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!{sys.executable}\n{FAKE_KERAS}")
    fake.chmod(0o755)
    out = tmp_path / "result.json"
    argv = ["--data", str(data), "--keras-python", str(fake), "--runs", "1", "--epochs", "2"]
    argv += ["--batch-size", "4", "--widths", "4,8,8", "--image-size", "16", "--limit", "4"]
    argv += ["--threads", "1", "--out", str(out)]
    assert folder_epoch.main(argv) == 0

    result = json.loads(out.read_text())
    assert (result["settings"]["batch_size"], result["settings"]["schedule"]) == (4, "triangle")
    assert result["settings"]["files"] == 16  # 4 per class, 2 classes, 2 splits
    assert result["settings"]["widths"] == [4, 8, 8]
    keras = result["sides"]["keras"]
    assert (keras["first_epoch_median_s"], keras["later_epochs_median_s"]) == (4.0, 2.0)
    for side in ("cnnlab-cold", "cnnlab-warm"):
        run = result["sides"][side]["per_run"][0]
        assert "error" not in run, run
        assert len(run["epoch_seconds"]) == 2 and run["steps"] == 4  # 8 images, batch 4
        later = result["sides"][side]["later_epochs_median_s"]
        assert result["ratios"][side]["later_epochs"] == pytest.approx(later / 2.0)
        wall = result["sides"][side]["process_wall_median_s"]
        assert result["ratios"][side]["process_wall"] == pytest.approx(
            wall / keras["process_wall_median_s"]
        )
    printed = capsys.readouterr().out
    assert "| cnnlab, cold cache |" in printed and "| Keras | 4.00 | 2.00 |" in printed


def test_both_sides_default_to_cifar_nets_batch_and_schedule(folder_epoch, tmp_path: Path) -> None:
    from cnnlab.models.photos import CIFAR_TRAINING

    data = _photos(tmp_path / "photos", per_class=1)
    args = folder_epoch.parse_args(["--data", str(data), "--keras-python", sys.executable])
    assert args.batch_size == CIFAR_TRAINING["batch_size"] == 1024
    assert CIFAR_TRAINING["schedule"] == folder_epoch.SCHEDULE
