"""The workbench commands, run in-process: filter, filters, layers, visualize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cnnlab.cli import main


def _photo(path: Path, size: tuple[int, int] = (640, 427)) -> Path:
    """A synthetic RGB 'photo': sky gradient, a red house with a dark door, green noise."""
    w, h = size
    rng = np.random.default_rng(0)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 2] = np.linspace(255, 120, h)[:, None].astype(np.uint8)
    arr[..., 1] = 150
    arr[h // 2 :, :, :] = (rng.random((h - h // 2, w, 1)) * [60, 180, 60]).astype(np.uint8)
    img = Image.fromarray(arr)
    d = ImageDraw.Draw(img)
    d.rectangle((w // 4, h // 3, w // 2, 3 * h // 4), fill=(200, 40, 30))
    d.polygon([(w // 4, h // 3), (3 * w // 8, h // 6), (w // 2, h // 3)], fill=(90, 60, 40))
    d.rectangle((3 * w // 8 - 10, h // 2, 3 * w // 8 + 10, 3 * h // 4), fill=(20, 20, 20))
    img.save(path)
    return path


def _digit(path: Path, size: int = 28, dark_on_light: bool = False) -> Path:
    """A hand-drawn-looking 7 on a square canvas."""
    img = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(img)
    s = size / 28
    d.line([(6 * s, 6 * s), (21 * s, 6 * s), (11 * s, 23 * s)], fill=255, width=max(2, int(3 * s)))
    if dark_on_light:
        img = Image.fromarray(255 - np.asarray(img))
    img.save(path)
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err


# ---------------------------------------------------------------- filter


def test_filter_stride_same_writes_expected_size(tmp_path: Path, capsys) -> None:
    photo = _photo(tmp_path / "photo.jpg")
    out = tmp_path / "edges.png"
    rc = main(
        ["filter", str(photo), "--kernel", "sobel-x", "--stride", "2", "--padding", "same",
         "-o", str(out)]
    )  # fmt: skip
    assert rc == 0
    with Image.open(out) as im:
        assert im.size == (320, 214) and im.mode == "RGB"
    text = capsys.readouterr().out
    assert "427×640×3 → 214×320×3" in text and "signed" in text


def test_filter_grey_matrix_kernel_valid_padding(tmp_path: Path, capsys) -> None:
    digit = _digit(tmp_path / "seven.png")
    out = tmp_path / "d.png"
    assert main(["filter", str(digit), "-k", "1,-1", "--padding", "valid", "-o", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (27, 28)
    assert "28×28×1 → 28×27×1" in capsys.readouterr().out


def test_filter_blur_keeps_colour_and_size(tmp_path: Path) -> None:
    photo = _photo(tmp_path / "photo.png", (90, 60))
    out = tmp_path / "blur.png"
    rc = main(["filter", str(photo), "-k", "gaussian", "--size", "7", "--sigma", "2",
               "--border", "replicate", "-o", str(out)])  # fmt: skip
    assert rc == 0
    with Image.open(out) as im:
        arr = np.asarray(im)
    assert arr.shape == (60, 90, 3)
    assert arr[..., 0].mean() != arr[..., 2].mean()  # still in colour


def test_large_photo_is_scaled_down(tmp_path: Path, capsys) -> None:
    photo = _photo(tmp_path / "big.jpg", (3000, 2000))
    out = tmp_path / "big-edges.png"
    assert main(["filter", str(photo), "-k", "sobel", "-o", str(out)]) == 0
    with Image.open(out) as im:
        assert max(im.size) == 1024
    assert "scaled down from 2000×3000" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["filter", "MISSING.png", "-k", "sobel-x"], ("MISSING.png", "does not exist")),
        (["filter", "{digit}", "-k", "sobelx"], ("unknown kernel 'sobelx'",)),
        (["filter", "{digit}", "-k", "sobel-x", "--stride", "0"], ("stride 0",)),
        (["filter", "{digit}", "-k", "sobel-x", "--stride", "a"], ("stride 'a'",)),
        (["filter", "{digit}", "-k", "sobel-x", "--padding", "full"], ("padding 'full'",)),
        (["filter", "{digit}", "-k", "mean", "--size", "4"], ("must be odd",)),
        (["filter", "{digit}", "-k", "mean", "--size", "31", "--padding", "valid"],
         ("kernel 31×31", "larger than the padded input 28×28")),
        (["filter", "{notimage}", "-k", "sobel-x"], ("cannot be read",)),
        (["filters", "{digit}", "--kernels", "sobel-x,nope"], ("unknown kernel 'nope'",)),
        (["layers", "no-such-model"], ("unknown model",)),
        (["layers", "seed001-lenet5", "--input-size", "1,8,8"], ("layer", "larger than")),
        (["layers", "seed000-cnn", "--input-size", "1,8"], ("--input-size",)),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys, argv, words) -> None:
    digit = _digit(tmp_path / "seven.png")
    notimage = tmp_path / "notes.png"
    notimage.write_text("not a picture")
    argv = [a.format(digit=digit, notimage=notimage) for a in argv]
    if argv[0].startswith("filter"):
        argv += ["-o", str(tmp_path / "x.png")]
    assert main(argv) == 2
    _one_line_error(capsys, *words)
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------- filters


def test_filters_sheet_on_photo_and_digit(tmp_path: Path, capsys) -> None:
    photo = _photo(tmp_path / "photo.jpg")
    digit = _digit(tmp_path / "seven.png")
    for src, name in [(photo, "photo-sheet.png"), (digit, "digit-sheet.png")]:
        out = tmp_path / name
        assert main(["filters", str(src), "-o", str(out)]) == 0
        with Image.open(out) as im:
            w, h = im.size
            assert 800 <= w <= 1600 and h > 600
            # not blank: the sheet holds pictures, not only white
            assert np.asarray(im.convert("L")).std() > 20
    assert "under 15 kernels" in capsys.readouterr().out


def test_filters_chosen_kernels_grey(tmp_path: Path, capsys) -> None:
    photo = _photo(tmp_path / "p.png", (120, 80))
    out = tmp_path / "s.png"
    rc = main(["filters", str(photo), "--kernels", "mean-5,laplacian-8", "--color", "grey",
               "-o", str(out)])  # fmt: skip
    assert rc == 0 and out.stat().st_size > 1000
    assert "80×120×1 under 2 kernels" in capsys.readouterr().out  # read as one grey channel
    with Image.open(out) as im:
        w, h = im.size
    assert w > 2 * h  # one row: the original and the two chosen kernels, not all 15


# ---------------------------------------------------------------- layers


def test_layers_lenet5(capsys) -> None:
    assert main(["layers", "seed001-lenet5"]) == 0
    out = capsys.readouterr().out
    assert "28×28×6 → 14×14×6 → 10×10×16 → 5×5×16 → 120" in out
    assert "(5·5·1+1)·6 = 156" in out
    assert "156 + 2,416 + 48,120 + 10,164 + 850 = 61,706" in out


def test_layers_alexnet(capsys) -> None:
    assert main(["layers", "seed001-alexnet"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    first_conv = next(line for line in lines if "Conv2d" in line)
    first_pool = next(line for line in lines if "MaxPool2d" in line)
    assert "55×55×96" in first_conv and "11×11" in first_conv
    assert "27×27×96" in first_pool
    assert main(["layers", "seed001-alexnet", "--arg", "num_classes=1000"]) == 0
    assert "62,378,344" in capsys.readouterr().out


# ---------------------------------------------------------------- visualize


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "cnn"
    rc = main(["train", "--model", "seed000-cnn", "--dataset", "digits", "--epochs", "1",
               "--out", str(run)])  # fmt: skip
    assert rc == 0
    return run


def test_visualize_trained_run(trained_run: Path, tmp_path: Path, capsys) -> None:
    digit = _digit(tmp_path / "seven.png", size=200, dark_on_light=True)
    out = tmp_path / "vis"
    capsys.readouterr()
    assert main(["visualize", str(trained_run), "--image", str(digit), "-o", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["features-1-0.png", "features-2-3.png", "kernels.png", "pooling-shift.png"]
    for p in out.iterdir():
        with Image.open(p) as im:
            assert im.size[0] > 300
    text = capsys.readouterr().out
    assert "after 2×2 max pooling" in text


def test_visualize_errors(trained_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "vis"
    assert main(["visualize", str(trained_run), "--image", "nope.png", "-o", str(out)]) == 2
    _one_line_error(capsys, "nope.png")
    digit = _digit(tmp_path / "seven.png")
    assert main(["visualize", str(tmp_path / "norun"), "--image", str(digit), "-o", str(out)]) == 2
    _one_line_error(capsys, "norun")
