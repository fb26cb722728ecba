"""prepare_digit: user pictures become MNIST-style 28x28 white-on-black digits."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from cnnlab.data import prepare_digit, prepare_digits
from cnnlab.errors import CnnlabError


def _draw(kind: str, size: int = 200) -> Image.Image:
    """A thick black digit on a white canvas, deliberately off-centre."""
    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    if kind == "1":
        draw.line([(70, 30), (80, 170)], fill=0, width=18)
    else:
        draw.ellipse([40, 50, 130, 180], outline=0, width=16)
    return img


def _centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    w = a.astype(np.float64)
    idx = np.arange(a.shape[0])
    total = w.sum()
    return float((w.sum(axis=1) * idx).sum() / total), float((w.sum(axis=0) * idx).sum() / total)


def _bbox(a: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def _diff_up_to_one_pixel(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference, minimised over shifts of at most one pixel."""
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return min(
        float(np.abs(np.roll(a.astype(int), s, axis=(0, 1)) - b.astype(int)).mean()) for s in shifts
    )


@pytest.mark.parametrize("kind", ["1", "0"])
def test_mnist_style_output(kind: str) -> None:
    out = prepare_digit(_draw(kind))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out.max() == 255
    # white ink on black: the border is background
    assert out[0].max() == 0 and out[-1].max() == 0 and out[:, 0].max() == 0
    cy, cx = _centre_of_mass(out)
    assert abs(cy - 14.0) <= 1.0 and abs(cx - 14.0) <= 1.0
    h, w = _bbox(out)
    assert max(h, w) == 20
    if kind == "1":
        assert w < h / 2, "aspect ratio kept"


@pytest.mark.parametrize("kind", ["1", "0"])
def test_polarity_is_detected(kind: str) -> None:
    dark_on_light = prepare_digit(_draw(kind))
    light_on_dark = prepare_digit(ImageOps.invert(_draw(kind)))
    diff = np.abs(dark_on_light.astype(int) - light_on_dark.astype(int))
    assert diff.mean() < 2 and diff.max() <= 8


def test_inputs_path_bytes_array_rgba_jpeg(tmp_path: Path) -> None:
    ref = prepare_digit(_draw("0"))
    png = tmp_path / "zero.png"
    _draw("0").save(png)
    buf = io.BytesIO()
    _draw("0").convert("RGB").save(buf, format="JPEG", quality=70)
    rgba = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    rgba.paste(Image.new("RGBA", (200, 200), (20, 20, 20, 255)), mask=ImageOps.invert(_draw("0")))
    white_on_transparent = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    white_on_transparent.paste(
        Image.new("RGBA", (200, 200), (255, 255, 255, 255)), mask=ImageOps.invert(_draw("0"))
    )
    for variant in (
        png,
        str(png),
        png.read_bytes(),
        buf.getvalue(),
        np.asarray(_draw("0")),
        np.asarray(_draw("0"), dtype=np.float32) / 255.0,
        rgba,
        white_on_transparent,
    ):
        # JPEG noise may tip a rounding tie in the whole-pixel centring shift
        assert _diff_up_to_one_pixel(prepare_digit(variant), ref) < 4, type(variant)


def test_blank_image_gives_zeros() -> None:
    assert not prepare_digit(Image.new("L", (50, 80), 255)).any()
    noisy = np.random.default_rng(0).normal(128, 3, (64, 64)).clip(0, 255).astype(np.uint8)
    assert not prepare_digit(noisy).any()


def test_other_sizes_and_batch() -> None:
    assert prepare_digit(_draw("1"), size=56).shape == (56, 56)
    batch = prepare_digits([_draw("1"), _draw("0")])
    assert batch.shape == (2, 28, 28) and batch.dtype == np.uint8
    assert prepare_digits([]).shape == (0, 28, 28)


def test_text_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not an image\n")
    with pytest.raises(CnnlabError, match=r"notes\.txt.*not an image"):
        prepare_digit(path)
    with pytest.raises(CnnlabError, match="not found"):
        prepare_digit(tmp_path / "missing.png")


def test_truncated_png_is_rejected(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (300, 300), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(CnnlabError, match=r"cut\.png") as info:
        prepare_digit(path)
    assert "\n" not in str(info.value)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [8000, 20000])
def test_absurd_dimensions_are_refused(tmp_path: Path, side: int) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(side, side))
    with pytest.raises(CnnlabError, match=r"huge\.png.*(megapixel|too large)"):
        prepare_digit(path)


@pytest.mark.mnist
@pytest.mark.skipif(not os.environ.get("CNNLAB_DATA"), reason="CNNLAB_DATA not set")
def test_mnist_digits_pass_through_nearly_unchanged() -> None:
    from cnnlab.data import load_dataset

    digits = load_dataset("mnist", "test", download=False).images[:200, 0].numpy()
    prepared = prepare_digits(digits)
    assert np.abs(prepared.astype(int) - digits.astype(int)).mean() < 5
    assert np.corrcoef(prepared.ravel(), digits.ravel())[0, 1] > 0.95
