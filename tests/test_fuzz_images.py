"""Fuzzing image preparation: random arrays, random modes in every writable format, and
seeded mutations (byte flips, truncations, insertions) of valid files.

The only exception allowed out of ``prepare_digit`` is CnnlabError, with one line; a
normal run tries a few hundred inputs, ``CNNLAB_FUZZ=full`` over 5,000 (print the
counts with ``-s``).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageDraw

from cnnlab.cli import main
from cnnlab.data import prepare_digit
from cnnlab.errors import CnnlabError
from tests.fuzzing import PeakMemory, cases, fuzz_settings

# Pillow warns about the corruption it works around; those warnings are expected here.
pytestmark = [pytest.mark.fuzz, pytest.mark.filterwarnings("ignore::UserWarning")]

MEMORY = PeakMemory()


@pytest.fixture(autouse=True, scope="module")
def _own_peak_memory(digits_run: Path) -> None:
    """Measure from after the model is trained and loaded: the cases' own memory."""
    MEMORY.start()


MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"]
MODES += ["I;16", "I;16B"]
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "TGA", "ICO", "SGI", "DDS"]
FORMATS += ["PCX", "IM", "XBM", "JPEG2000", "SPIDER"]


def _check(source: object) -> str:
    """Prepare ``source``; "ok" or "refused", failing the test on anything else."""
    try:
        out = prepare_digit(source)  # type: ignore[arg-type]
    except CnnlabError as exc:
        assert "\n" not in str(exc)
        return "refused"
    assert out.shape == (28, 28) and out.dtype == np.uint8
    return "ok"


def _digit(size: int, mode: str) -> Image.Image:
    img = Image.new("L", (size, size), 255)
    ImageDraw.Draw(img).ellipse([size // 4, size // 8, 3 * size // 4, 7 * size // 8], width=3)
    return img.convert(mode)


def _encode(img: Image.Image, fmt: str) -> bytes | None:
    """``img`` in ``fmt``, or None where Pillow cannot write that mode in that format."""
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return buf.getvalue()


def _seeds() -> list[bytes]:
    """Valid files in many formats and modes: the material the mutators work on."""
    out = []
    for fmt in FORMATS:
        for mode in MODES:
            data = _encode(_digit(48, mode), fmt)
            if data is not None:
                out.append(data)
    return out


SEEDS = _seeds()
COUNTS: dict[str, int] = {}


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """Byte flips, header overwrites, truncation or insertion of random bytes."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(4)
        if kind == 0 and b:
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif kind == 1 and b:  # header fields: sizes, depths, modes live in the first bytes
            i = rng.randrange(min(len(b), 64))
            b[i : i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\x7f\xff", b"\x80"])
        elif kind == 2:
            del b[rng.randrange(len(b) + 1) :]
        else:
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 32))
    return bytes(b)


def test_mutated_files() -> None:
    """Seeded mutations of valid files of every format, as bytes and as paths."""
    assert len(SEEDS) > 40, "the seed corpus lost its formats"
    rng = random.Random(1234)
    n = cases(200, 4000)
    seen = {"ok": 0, "refused": 0}
    for _ in range(n):
        seen[_check(_mutate(rng, rng.choice(SEEDS)))] += 1
    COUNTS["mutated"] = n
    print(f"\nmutated files: {n} ({seen})")
    assert seen["ok"] > 0 and seen["refused"] > 0


@fuzz_settings(bounded=50, on_demand=800)
@given(
    mode=st.sampled_from(MODES),
    fmt=st.sampled_from(FORMATS),
    width=st.integers(1, 80),
    height=st.integers(1, 80),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_modes_in_every_format(mode: str, fmt: str, width: int, height: int, seed: int):
    rng = np.random.default_rng(seed)
    noise = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "L")
    data = _encode(noise.convert(mode), fmt)
    COUNTS["encoded"] = COUNTS.get("encoded", 0) + 1
    if data is not None:
        _check(data)


DTYPES = st.sampled_from(
    ["u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8", "b1", "c8", "O", "M8[s]"]
)


@fuzz_settings(bounded=100, on_demand=1000)
@given(
    data=st.data(),
    dtype=DTYPES,
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=40),
)
def test_random_arrays(data: st.DataObject, dtype: str, shape: tuple[int, ...]) -> None:
    if dtype == "O":
        arr = np.empty(shape, dtype=object)
    else:
        arr = data.draw(hnp.arrays(np.dtype(dtype), shape))
    COUNTS["arrays"] = COUNTS.get("arrays", 0) + 1
    _check(arr)


def test_predict_command_on_mutated_files(
    capsys: pytest.CaptureFixture[str], digits_run: Path, tmp_path: Path
) -> None:
    """The CLI in-process: exit 0 with a line per file, or 2 with one error line."""
    rng = random.Random(99)
    n = cases(15, 300)
    for i in range(n):
        path = tmp_path / f"f{i}.img"
        path.write_bytes(_mutate(rng, rng.choice(SEEDS)))
        code = main(["predict", str(digits_run), str(path)])
        out, err = capsys.readouterr()
        assert code in (0, 2), path.name
        assert "Traceback" not in err
        if code == 2:
            assert path.name in err and len(err.strip().splitlines()) == 1
        else:
            assert out.startswith(str(path))
    COUNTS["cli"] = n
    print(f"\ncli files: {n}; inputs so far {COUNTS}; {MEMORY.check()}")
