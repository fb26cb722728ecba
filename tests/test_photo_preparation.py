"""The digit preparation on photo-like pictures: uneven light, shadows, ruled lines,
specks, pens of every width, small digits on big canvases, and its stages."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from cnnlab.data import prepare_digit
from cnnlab.data.ink import MNIST_STROKE, find_ink, stroke_width
from cnnlab.data.prepare import PreparationSteps, prepare_steps

SIDE = 240


def _digit_alpha(
    width: int = 14, side: int = SIDE, scale: float = 1.0, at=(0.5, 0.5)
) -> np.ndarray:
    """Ink coverage (0..1) of a "4"-like digit: three strokes of ``width`` pixels."""
    img = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(img)
    cx, cy, s = at[0] * side, at[1] * side, 70 * scale
    draw.line([(cx - 0.4 * s, cy - s), (cx - 0.5 * s, cy + 0.1 * s)], fill=255, width=width)
    draw.line([(cx - 0.5 * s, cy + 0.1 * s), (cx + 0.5 * s, cy + 0.1 * s)], fill=255, width=width)
    draw.line([(cx + 0.3 * s, cy - s), (cx + 0.3 * s, cy + s)], fill=255, width=width)
    return np.asarray(img, dtype=np.float64) / 255.0


def _photo(alpha: np.ndarray, paper: np.ndarray | float = 215.0, ink: float = 40.0) -> np.ndarray:
    """Dark ink on paper (both may vary over the picture), with mild sensor noise."""
    grey = paper * (1.0 - alpha) + ink * alpha
    noise = np.random.default_rng(0).normal(0, 2.0, alpha.shape)
    return np.clip(grey + noise, 0, 255).astype(np.uint8)


def _near(alpha: np.ndarray) -> np.ndarray:
    """The ink and the three pixels around it (where smoothing may spread it)."""
    return ndimage.binary_dilation(alpha > 0, iterations=3)


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two prepared digits, minimised over 1-pixel shifts."""
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return min(
        float(np.abs(np.roll(a.astype(int), s, axis=(0, 1)) - b.astype(int)).mean()) for s in shifts
    )


def _centre(a: np.ndarray) -> tuple[float, float]:
    w = a.astype(np.float64)
    idx = np.arange(a.shape[0])
    return float((w.sum(1) * idx).sum() / w.sum()), float((w.sum(0) * idx).sum() / w.sum())


def _box(a: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return prepare_digit(_photo(_digit_alpha()))


def test_a_clean_photo_gives_an_mnist_style_digit(clean: np.ndarray) -> None:
    assert clean.max() == 255 and clean[0].max() == 0 and clean[:, 0].max() == 0
    cy, cx = _centre(clean)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    assert max(_box(clean)) == 20


def test_a_lighting_gradient_is_divided_out(clean: np.ndarray) -> None:
    ramp = np.linspace(250, 110, SIDE)[None, :].repeat(SIDE, 0)  # the right side in dim light
    alpha = _digit_alpha()
    photo = _photo(alpha, paper=ramp, ink=ramp * 0.2)
    found = find_ink(photo.astype(np.float32))
    # The background follows the light; the paper is nowhere ink.
    assert found.background[:, :20].mean() - found.background[:, -20:].mean() > 100
    assert not found.mask[~_near(alpha)].any()
    assert _diff(prepare_digit(photo), clean) < 6


def test_a_shadow_edge_is_not_ink(clean: np.ndarray) -> None:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    light = np.where(xx + 0.6 * yy > 250, 0.55, 1.0)  # a hard shadow over the lower right
    alpha = _digit_alpha()
    photo = _photo(alpha, paper=215.0 * light, ink=40.0 * light)
    found = find_ink(photo.astype(np.float32))
    assert found.dark_ink
    # A wedge of shadow narrower than the background filter in a corner may look like
    # ink, but it touches the border and is not taken for the digit.
    steps = prepare_steps(photo)
    assert not (steps.stages["digit"] == 255)[~_near(alpha)].any()
    assert _diff(steps.result, clean) < 6


def test_a_shadow_over_most_of_the_sheet_keeps_the_polarity(clean: np.ndarray) -> None:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    light = np.where(xx > 0.25 * SIDE, 0.5, 1.0)  # three quarters in shadow
    photo = _photo(_digit_alpha(), paper=215.0 * light, ink=40.0 * light)
    assert find_ink(photo.astype(np.float32)).dark_ink
    assert _diff(prepare_digit(photo), clean) < 8


def test_ruled_lines_are_removed(clean: np.ndarray) -> None:
    alpha = _digit_alpha()
    paper = np.full((SIDE, SIDE), 220.0)
    for y in range(7, SIDE, 24):
        paper[y : y + 2] = 150.0  # ruled lines through the digit too
    photo = _photo(alpha, paper=paper)
    found = find_ink(photo.astype(np.float32))
    assert found.lines.sum() > 0.5 * SIDE * (SIDE // 24)
    out = prepare_digit(photo)
    assert max(_box(out)) == 20
    assert _diff(out, clean) < 8
    # Without the removal, a line's pixels would join the digit and widen its box.
    assert _box(out)[1] <= _box(clean)[1] + 1


def test_specks_and_border_clutter_are_dropped(clean: np.ndarray) -> None:
    alpha = _digit_alpha()
    rng = np.random.default_rng(1)
    for _ in range(12):  # pen specks and dust away from the digit
        y, x = rng.integers(5, 40), rng.integers(5, SIDE - 5)
        alpha[y : y + 3, x : x + 3] = 1.0
    alpha[:, -18:] = 1.0  # a dark table beyond the paper's edge
    out = prepare_digit(_photo(alpha))
    assert _diff(out, clean) < 6


@pytest.mark.parametrize(("width", "action"), [(2, "thickened"), (44, "thinned"), (14, "kept")])
def test_stroke_width_lands_in_mnist_range(width: int, action: str) -> None:
    steps = prepare_steps(_photo(_digit_alpha(width=width)))
    assert steps.stroke == action
    measured = stroke_width(steps.result >= 128)
    assert 1.6 <= measured <= 4.6, measured
    if action == "thickened":
        assert abs(measured - MNIST_STROKE) < 1.2, measured
    if action == "thinned":  # from about 6 pixels wide in the box
        assert steps.stroke_width > 5.0 and measured < 4.5, measured


def test_a_small_digit_off_centre_on_a_big_canvas_is_centred() -> None:
    alpha = _digit_alpha(width=3, side=900, scale=0.35, at=(0.15, 0.8))
    out = prepare_digit(_photo(alpha))
    cy, cx = _centre(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    assert max(_box(out)) == 20


def test_light_ink_on_a_dark_board_with_a_gradient(clean: np.ndarray) -> None:
    ramp = np.linspace(30, 80, SIDE)[:, None].repeat(SIDE, 1)
    photo = _photo(_digit_alpha(), paper=ramp, ink=220.0)
    found = find_ink(photo.astype(np.float32))
    assert not found.dark_ink
    assert _diff(prepare_digit(photo), clean) < 6


def test_blank_and_all_ink_pictures_give_zeros() -> None:
    ramp = np.linspace(250, 120, SIDE)[None, :].repeat(SIDE, 0)
    assert not prepare_digit(_photo(np.zeros((SIDE, SIDE)), paper=ramp)).any()
    assert not prepare_digit(np.full((SIDE, SIDE), 30, np.uint8)).any()
    assert not prepare_digit(_photo(np.ones((SIDE, SIDE)))).any()


def test_the_biggest_object_is_the_digit_and_its_pieces_stay() -> None:
    alpha = _digit_alpha()
    alpha[150:160, 20:30] = 1.0  # a small blot beside it, well apart
    broken = alpha.copy()
    broken[:, 100:104] = 0.0  # the bar broken: one digit in two pieces
    steps = prepare_steps(_photo(broken))
    digit = steps.stages["digit"]
    assert (digit == 255).sum() > 0.8 * (alpha > 0.5).sum() - 400
    assert (digit[150:160, 20:30] == 80).all(), "the blot is seen and dropped"


def test_stages_are_kept_and_saved(tmp_path: Path) -> None:
    steps = prepare_steps(_photo(_digit_alpha()))
    assert isinstance(steps, PreparationSteps) and not steps.blank
    assert list(steps.stages) == [
        "picture",
        "background",
        "ink",
        "mask",
        "digit",
        "strokes",
        "prepared",
    ]
    assert np.array_equal(steps.stages["prepared"], prepare_digit(_photo(_digit_alpha())))
    paths = steps.save(tmp_path / "stages")
    assert [p.name for p in paths][:2] == ["01-picture.png", "02-background.png"]
    big = np.asarray(Image.open(tmp_path / "stages" / "prepared-large.png"))
    assert big.shape == (224, 224) and big.max() == 255


def test_a_big_photo_is_prepared_quickly() -> None:
    alpha = _digit_alpha(width=40, side=3000, scale=8)
    photo = _photo(alpha, paper=np.linspace(240, 150, 3000)[None, :])
    prepare_digit(photo[:300, :300])  # imports and caches warmed
    start = time.perf_counter()
    out = prepare_digit(photo)
    assert time.perf_counter() - start < 2.0
    assert out.any()


def test_a_solid_blob_is_thinned_within_bounds() -> None:
    alpha = np.zeros((SIDE, SIDE))
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    alpha[(yy - 120) ** 2 + (xx - 120) ** 2 < 20**2] = 1.0  # one enormous "stroke"
    start = time.perf_counter()
    steps = prepare_steps(_photo(alpha))
    assert time.perf_counter() - start < 2.0
    assert steps.stroke == "thinned" and steps.result.any()
