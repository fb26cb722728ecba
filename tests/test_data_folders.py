"""A user's folder of images (one sub-folder per class) read as a dataset."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.data import folders
from cnnlab.data.folders import FolderSettings, load_folder
from cnnlab.errors import CnnlabError

COLOURS = {"ants": (255, 0, 0), "bees": (0, 0, 255), "cats": (0, 255, 0)}


def _image(path: Path, colour=(255, 0, 0), size=(12, 12), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)
    return path


def _classes(root: Path, per_class: int = 5, classes=("ants", "bees")) -> Path:
    for name in classes:
        for i in range(per_class):
            _image(root / name / f"{i}.png", COLOURS[name])
    return root


def _load(root: Path, **kw):
    settings = FolderSettings(
        size=(8, 8), channels=kw.pop("channels", 3), resize=kw.pop("resize", "pad")
    )
    return load_folder(root, settings, progress=False, **kw)


def test_flat_folder_holds_out_a_stratified_fifth(tmp_path: Path) -> None:
    _classes(tmp_path / "pics", per_class=10)
    train, test = _load(tmp_path / "pics")
    assert train.classes == test.classes == ("ants", "bees")
    assert (len(train), len(test)) == (16, 4)
    assert test.labels.tolist().count(0) == test.labels.tolist().count(1) == 2
    assert tuple(train.images.shape[1:]) == (3, 8, 8)
    assert train.name == "pics" and train.split == "train" and test.split == "test"
    again, again_test = _load(tmp_path / "pics")
    assert again_test.images.equal(test.images)  # the same split every time


@pytest.mark.parametrize("test_name", ["test", "val"])
def test_train_with_test_or_val_folder(tmp_path: Path, test_name: str) -> None:
    _classes(tmp_path / "d" / "train", per_class=4)
    _classes(tmp_path / "d" / test_name, per_class=2)
    train, test = _load(tmp_path / "d")
    assert (len(train), len(test)) == (8, 4)
    assert test.classes == ("ants", "bees")
    # labels follow the colours: ants red, bees blue
    for data in (train, test):
        red = data.images[:, 0, 4, 4] > 200
        assert red.tolist() == (data.labels == 0).tolist()


def test_classes_sorted_and_nested_files_count(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for name in ("cats", "ants", "bees"):
        _image(root / name / "a.png", COLOURS[name])
        _image(root / name / "deep" / "er" / "b.JPG", COLOURS[name], fmt="JPEG")
        _image(root / name / "c.Jpeg", COLOURS[name], fmt="JPEG")
    train, test = _load(root)
    assert train.classes == ("ants", "bees", "cats")
    assert len(train) + len(test) == 9
    assert sorted(train.labels.tolist() + test.labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_hidden_and_non_image_files_ignored(tmp_path: Path, capsys) -> None:
    root = _classes(tmp_path / "d", per_class=3)
    _image(root / "ants" / ".hidden.png")
    _image(root / "ants" / ".ipynb_checkpoints" / "x.png")
    _image(root / ".ipynb_checkpoints" / "x.png")
    (root / "ants" / ".DS_Store").write_bytes(b"\0\1junk")
    (root / "bees" / "notes.txt").write_text("not an image")
    train, test = _load(root)
    assert train.classes == ("ants", "bees")
    assert len(train) + len(test) == 6
    assert "skipped" not in capsys.readouterr().err


def test_exif_rotation_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (20, 10), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 10))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: the left half on top
    root = tmp_path / "d"
    root.joinpath("a").mkdir(parents=True)
    img.save(root / "a" / "r.jpg", exif=exif, quality=95)
    _image(root / "b" / "x.png")
    _image(root / "b" / "y.png")
    _image(root / "a" / "z.png")
    settings = FolderSettings(size=(16, 16), resize="squish")
    train, test = load_folder(root, settings, progress=False)
    images = [*train.images, *test.images]
    rotated = next(x for x in images if x[2, 15, 0] > 150)  # blue at the bottom left
    assert rotated[0, 0, 0] > 150 and rotated[2, 0, 0] < 100  # red at the top left


def test_pad_keeps_aspect_ratio_with_black_border(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _image(root / "a" / "wide.png", (255, 255, 255), size=(20, 10))
    _image(root / "a" / "b.png")
    _image(root / "b" / "c.png")
    _image(root / "b" / "d.png")
    train, test = _load(root)
    wide = next(x for x in [*train.images, *test.images] if x.min() == 0 and x[0, 4, 4] == 255)
    assert wide[:, 0, :].max() == 0 and wide[:, 4, :].min() == 255


def test_cmyk_jpeg_and_16_bit_png_read(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(2):
        Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(root / "a" / f"{i}.jpg")
        deep = np.full((10, 10), 257 * 100, dtype=np.uint16)  # level 100 of 255
        Image.fromarray(deep).save(root / "b" / f"{i}.png")
    with Image.open(root / "b" / "0.png") as deep_file:
        assert deep_file.mode.startswith("I")  # really 16 bits
    train, test = _load(root)
    for data in (train, test):
        for x, y in zip(data.images, data.labels, strict=True):
            if y == 0:
                assert x[0, 4, 4] > 200 and x[1, 4, 4] < 60  # red
            else:
                assert x[:, 4, 4].tolist() == [100, 100, 100]  # grey, scaled from 16 bits
    grey, _ = _load(root, channels=1)
    assert grey.images.shape[1] == 1


def _bad_files(root: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, format="JPEG")
    (root / "ants" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "bees" / "text.png").write_text("hello, I am not a picture\n")


def test_unreadable_files_skipped_and_named(tmp_path: Path, capsys) -> None:
    root = _classes(tmp_path / "d", per_class=4)
    _bad_files(root)
    train, test = _load(root)
    assert len(train) + len(test) == 8
    err = capsys.readouterr().err
    assert "cut.jpg" in err and "text.png" in err
    assert "skipped 2 of 10 files" in err
    # the cached entry still names them
    _load(root)
    assert "skipped 2 of 10 files" in capsys.readouterr().err


def test_strict_stops_at_the_first_bad_file(tmp_path: Path) -> None:
    root = _classes(tmp_path / "d", per_class=4)
    _bad_files(root)
    with pytest.raises(CnnlabError, match="cut.jpg") as info:
        _load(root, strict=True)
    assert "\n" not in str(info.value)


def test_strict_from_the_command_line_exits_2(tmp_path: Path, capsys) -> None:
    from cnnlab.cli import main

    root = _classes(tmp_path / "d", per_class=4)
    _bad_files(root)
    code = main(
        ["train", "--data", str(root), "--strict", "--epochs", "1", "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "cut.jpg" in err and len(err.strip().splitlines()) == 1


def test_empty_class_warned_and_left_out(tmp_path: Path, capsys) -> None:
    root = _classes(tmp_path / "d", per_class=3)
    (root / "empty" / "sub").mkdir(parents=True)
    (root / "empty" / "readme.txt").write_text("nothing here")
    train, _ = _load(root)
    assert train.classes == ("ants", "bees")
    err = capsys.readouterr().err
    assert "empty" in err and "left out" in err


def test_no_images_or_one_class_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "none" / "a").mkdir(parents=True)
    with pytest.raises(CnnlabError, match="none") as info:
        _load(tmp_path / "none")
    assert "\n" not in str(info.value)
    _classes(tmp_path / "one", classes=("ants",))
    with pytest.raises(CnnlabError, match="only one class") as info:
        _load(tmp_path / "one")
    assert "one" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CnnlabError, match="no such folder"):
        _load(tmp_path / "missing")


def test_second_load_reads_the_cache_and_a_touched_file_invalidates_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _classes(tmp_path / "d", per_class=3)
    calls = []
    real = folders.decode_file

    def counting(*args, **kw):
        calls.append(args[0])
        return real(*args, **kw)

    monkeypatch.setattr(folders, "decode_file", counting)
    first, _ = _load(root)
    assert len(calls) == 6
    entries = list((Path(os.environ["CNNLAB_CACHE"]) / "folders").iterdir())
    assert len(entries) == 1 and (entries[0] / "images.npy").is_file()
    second, _ = _load(root)
    assert len(calls) == 6 and second.images.equal(first.images)
    # other settings: a new entry
    _load(root, resize="crop")
    assert len(calls) == 12
    # a touched file: decoded again
    path = root / "ants" / "0.png"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    _load(root)
    assert len(calls) == 18


def test_cli_trains_on_a_folder(tmp_path: Path, capsys) -> None:
    from cnnlab.cli import main

    root = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        for i in range(14):
            noise = rng.integers(0, 40, (9, 11, 3))
            x = np.clip(np.array(colour) + noise - 20, 0, 255).astype(np.uint8)
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(x).save(root / name / f"{i}.png")
    run = tmp_path / "run"
    argv = ["train", "--data", str(root), "--model", "seed000-cnn", "--epochs", "1"]
    code = main([*argv, "--image-size", "28", "--out", str(run), "--quiet", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "shapes" and metrics["test_samples"] == 9
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == ["ants", "bees", "cats"]
    assert config["train"]["data"] == str(root.resolve())
    assert config["model"]["args"]["in_channels"] == 3
    # pictures given to predict and serve are prepared like the folder's images
    assert config["images"] == {"kind": "photos", "shape": [3, 28, 28], "resize": "pad"}
    # photos are normalised by their training images' own per-channel statistics
    from cnnlab.data.loader import channel_statistics
    from cnnlab.runs import load_run

    train = load_run(run).split("train")
    mean, std = channel_statistics(train.images)
    assert config["preprocess"]["mean"] == list(mean)
    assert config["preprocess"]["std"] == list(std)
    assert all(0.05 < m < 0.95 for m in mean) and all(0.05 < s < 0.95 for s in std)
    # resuming reads the folder again (from the cache)
    code = main(["train", "--resume", str(run), "--epochs", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert len(json.loads((run / "history.json").read_text())) == 2
    # evaluate and plot test on the folder's own held-out images, by class name
    reports = tmp_path / "reports"
    code = main(["evaluate", str(run), "--out", str(reports)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "cats" in (reports / "per_class.csv").read_text()
    assert json.loads((reports / "evaluation.json").read_text())
    code = main(["plot", str(run), "--out", str(tmp_path / "plots")])
    assert code == 0, capsys.readouterr().err


def test_normalize_fixed_keeps_mean_and_std(tmp_path: Path, capsys) -> None:
    from cnnlab.cli import main

    root = _classes(tmp_path / "data", per_class=5)
    run = tmp_path / "run"
    argv = ["train", "--data", str(root), "--model", "seed000-cnn", "--steps", "1"]
    argv += ["--normalize", "fixed", "--mean", "0.5", "--std", "0.25"]
    code = main([*argv, "--out", str(run), "--quiet"])
    assert code == 0, capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    assert (config["preprocess"]["mean"], config["preprocess"]["std"]) == (0.5, 0.25)


def test_data_and_dataset_together_refused(tmp_path: Path, capsys) -> None:
    from cnnlab.cli import main

    root = _classes(tmp_path / "d")
    code = main(["train", "--data", str(root), "--dataset", "mnist", "--out", str(tmp_path / "r")])
    assert code == 2 and "not both" in capsys.readouterr().err


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: decoding stays in-process")
def test_parallel_decoding_gives_the_same_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    root = _classes(tmp_path / "d", per_class=5)
    _bad_files(root)
    serial, serial_test = _load(root, resize="squish")
    monkeypatch.setattr(folders, "PARALLEL_FROM", 1)
    monkeypatch.setattr(folders, "CHUNK", 3)
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "other-cache"))
    capsys.readouterr()
    parallel, parallel_test = load_folder(
        root, FolderSettings(size=(8, 8), resize="squish"), progress=True
    )
    err = capsys.readouterr().err
    assert "processes" in err and "skipped 2 of 12 files" in err and "cut.jpg" in err
    assert parallel.images.equal(serial.images) and parallel.labels.equal(serial.labels)
    assert parallel_test.images.equal(serial_test.images)


def test_validation_split_is_reported_per_class(tmp_path: Path, capsys) -> None:
    from cnnlab.cli import main

    root = _classes(tmp_path / "data", per_class=10)  # 8 of each class left to train on
    argv = ["train", "--data", str(root), "--model", "seed000-cnn", "--steps", "1"]
    code = main([*argv, "--validation-split", "0.25", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "validation split: 4 images, 25% of each class (ants 2, bees 2)" in err
