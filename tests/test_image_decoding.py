"""Decoding hostile and unusual images: every colour mode, broken headers, huge inputs.

Whatever the file or array, preparing it gives a 28×28 digit or one CnnlabError line that
names the input; big images are decoded reduced, so memory does not grow with the file.
"""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cnnlab.cli import main
from cnnlab.conv import load_image
from cnnlab.data import prepare_digit
from cnnlab.data.prepare import MAX_PIXELS
from cnnlab.errors import CnnlabError


def _digit(size: int = 120) -> Image.Image:
    """A black "0" on white paper."""
    img = Image.new("L", (size, size), 255)
    s = size / 100
    ImageDraw.Draw(img).ellipse([30 * s, 15 * s, 70 * s, 85 * s], outline=0, width=round(10 * s))
    return img


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _close(a: np.ndarray, b: np.ndarray, tolerance: float = 6.0) -> bool:
    """Mean absolute difference under ``tolerance``, allowing a one-pixel shift."""
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    diff = min(
        float(np.abs(np.roll(a.astype(int), s, axis=(0, 1)) - b.astype(int)).mean()) for s in shifts
    )
    return diff < tolerance


def _float_tiff(values: dict[tuple[int, int], float] | None = None, fill: float | None = None):
    a = np.asarray(_digit(), dtype=np.float32).copy()
    if fill is not None:
        a[:] = fill
    for (y, x), v in (values or {}).items():
        a[y, x] = v
    return _encode(Image.fromarray(a, "F"), "TIFF")


def _mode_files() -> dict[str, bytes]:
    """Valid files in the colour modes people's tools write."""
    d = _digit()
    rgb = d.convert("RGB")
    return {
        "lab.tif": _encode(rgb.convert("LAB"), "TIFF"),
        "cmyk.jpg": _encode(d.convert("CMYK"), "JPEG"),
        "cmyk.tif": _encode(d.convert("CMYK"), "TIFF"),
        "ycbcr.tif": _encode(rgb.convert("YCbCr"), "TIFF"),
        "p.png": _encode(d.convert("P"), "PNG"),
        "p-transparent.png": _encode(d.convert("P"), "PNG", transparency=255),
        "la.png": _encode(d.convert("LA"), "PNG"),
        "i16.png": _encode(d.convert("I;16"), "PNG"),
        "i16b.tif": _encode(d.convert("I;16B"), "TIFF"),
        "i.tif": _encode(d.convert("I"), "TIFF"),
        "f.tif": _float_tiff(),
        "one-bit.png": _encode(d.convert("1"), "PNG"),
        "animated.gif": _encode(d, "GIF", save_all=True, append_images=[rgb.rotate(90)]),
        "multi.tif": _encode(d, "TIFF", save_all=True, append_images=[d.rotate(90)]),
    }


@pytest.mark.parametrize("name", sorted(_mode_files()))
def test_every_colour_mode_gives_the_digit(tmp_path: Path, name: str) -> None:
    reference = prepare_digit(_digit())
    path = tmp_path / name
    path.write_bytes(_mode_files()[name])
    assert _close(prepare_digit(path), reference), name


def _broken_files() -> dict[str, bytes]:
    """Headers that make Pillow's decoders raise something other than OSError."""
    return {
        "maxval-zero.pgm": b"P5\n3 3\n0\n" + b"\0" * 10,
        "maxval-big.pgm": b"P5\n3 3\n65536\n" + b"\0" * 20,
        "bad-mode.sgi": b"\x01\xda\x01\x01\x00\x03\x00\x10\x00\x10\x00\x05" + b"\0" * 500,
        "bad-format.dds": b"DDS |" + b"\0" * 124,
        "all-minus-huge.tif": _float_tiff(fill=-1e38),
        "nan.tif": _float_tiff({(5, 5): float("nan")}),
        "inf.tif": _float_tiff({(5, 5): float("inf")}),
        "minus-inf.tif": _float_tiff({(5, 5): -float("inf")}),
    }


@pytest.mark.parametrize("name", sorted(_broken_files()))
def test_broken_files_give_one_line_errors_or_a_digit(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(_broken_files()[name])
    try:
        out = prepare_digit(path)
    except CnnlabError as exc:
        assert name in str(exc) and "\n" not in str(exc)
    else:
        assert out.shape == (28, 28) and out.dtype == np.uint8


def test_float_tiff_with_one_huge_outlier_still_shows_the_digit(tmp_path: Path) -> None:
    reference = prepare_digit(_digit())
    for value in (-1e30, 1e30, 3.0e38):
        path = tmp_path / "outlier.tif"
        path.write_bytes(_float_tiff({(0, 0): value}))
        assert _close(prepare_digit(path), reference), value


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([[object()] * 8] * 8, dtype=object), "dtype"),
        (np.ones((8, 8), dtype=np.complex64), "dtype"),
        (np.array([["a"] * 8] * 8), "dtype"),
        (np.full((8, 8), np.nan, dtype=np.float32), "NaN"),
        (np.full((8, 8), np.inf), "NaN"),
        (np.full((8, 8), 2**40, dtype=np.int64), "0..65535"),
        (np.full((8, 8), -5, dtype=np.int64), "0..65535"),
        (np.zeros((0, 8), dtype=np.uint8), "no pixels"),
        (np.zeros((2, 8, 8, 1), dtype=np.uint8), "shape"),
        (np.broadcast_to(np.uint8(0), (100_000, 100_000)), "megapixel"),
        (np.broadcast_to(np.uint8(0), (10_000, 5_000, 3)), "megapixel"),
    ],
    ids=lambda v: "" if isinstance(v, str) else f"{v.dtype}-{v.shape}",
)
def test_bad_arrays_are_refused(array: np.ndarray, message: str) -> None:
    with pytest.raises(CnnlabError, match=message) as info:
        prepare_digit(array)
    assert "\n" not in str(info.value) and "ndarray" in str(info.value)


def test_bool_and_float16_arrays_work() -> None:
    reference = prepare_digit(_digit())
    ink = np.asarray(_digit()) < 128
    assert _close(prepare_digit(~ink), reference)
    assert _close(prepare_digit(np.asarray(_digit()).astype(np.float16) / 255), reference)


def test_pil_images_obey_the_pixel_limit() -> None:
    side = int(MAX_PIXELS**0.5) + 10
    with pytest.raises(CnnlabError, match="megapixel"):
        prepare_digit(Image.new("1", (side, side)))


def test_large_rgba_png_never_builds_a_float_copy() -> None:
    """numpy allocations stay far below one float32 copy of the 4096×4096 image (64 MiB)."""
    big = Image.new("RGBA", (4096, 4096), (250, 245, 235, 255))
    ImageDraw.Draw(big).ellipse([1300, 700, 2800, 3400], outline=(10, 10, 10, 255), width=300)
    data = _encode(big, "PNG", compress_level=1)
    del big
    tracemalloc.start()
    try:
        out = prepare_digit(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.max() == 255
    assert peak < 24 * 2**20, f"{peak / 2**20:.0f} MiB traced"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_large_photo_gives_the_same_digit_as_a_small_one(fmt: str) -> None:
    """Decoding reduced changes a big image's pixels slightly, never the digit."""
    small = prepare_digit(_encode(_digit(300).convert("RGB"), "PNG"))
    large = prepare_digit(_encode(_digit(5000).convert("RGB"), fmt))
    assert _close(large, small, tolerance=4.0)


def test_workbench_loader_guards_the_same_way(tmp_path: Path) -> None:
    files = {**_mode_files(), **_broken_files()}
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        try:
            image = load_image(path, color="grey")
        except CnnlabError as exc:
            assert name in str(exc) and "\n" not in str(exc), name
        else:
            assert image.pixels.shape[0] == 1 and bool(image.pixels.isfinite().all()), name
            assert 0.0 <= float(image.pixels.min()) <= float(image.pixels.max()) <= 1.0, name
    assert load_image(tmp_path / "lab.tif").pixels.shape == (1, 120, 120)  # its lightness


def test_workbench_loader_refuses_huge_images(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    Image.new("1", (9000, 9000)).save(path)
    with pytest.raises(CnnlabError, match=r"huge\.png.*megapixel"):
        load_image(path)


def test_predict_command_never_shows_a_traceback(capsys, digits_run: Path, tmp_path: Path) -> None:
    files = {**_mode_files(), **_broken_files()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        code = main(["predict", str(digits_run), str(tmp_path / name)])
        out, err = capsys.readouterr()
        assert code in (0, 2), name
        if code == 2:
            assert name in err and len(err.strip().splitlines()) == 1, name
        else:
            assert out.startswith(str(tmp_path / name)), name
    assert main(["predict", str(digits_run), str(tmp_path / "lab.tif")]) == 0
