"""How a run prepares one picture: as an MNIST digit, or like its folder's photos."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.folders import FolderSettings, decode_file
from cnnlab.data.preparation import ImagePreparation
from cnnlab.errors import CnnlabError


def _photo(tmp_path, w=40, h=20):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(arr).save(path)
    return path, arr


def test_photos_are_prepared_like_the_folder_images(tmp_path):
    path, _ = _photo(tmp_path)
    for resize in ("pad", "squish", "crop"):
        prep = ImagePreparation("photos", (3, 16, 16), resize)
        want = decode_file(path, FolderSettings((16, 16), 3, resize), "x")
        got = prep(path)
        assert got.shape == (3, 16, 16) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)
        # bytes, a PIL image and an array give the same image as the file
        np.testing.assert_array_equal(prep(path.read_bytes()), want)
        np.testing.assert_array_equal(prep(Image.open(path)), want)
        np.testing.assert_array_equal(prep(np.asarray(Image.open(path))), want)


def test_grey_photo_runs_get_one_channel(tmp_path):
    path, arr = _photo(tmp_path, 16, 16)
    got = ImagePreparation("photos", (1, 16, 16), "squish")(path)
    assert got.shape == (1, 16, 16)
    want = np.asarray(Image.fromarray(arr).convert("L"))
    assert np.abs(got[0].astype(int) - want.astype(int)).max() <= 1


def test_digits_keep_the_mnist_preparation():
    canvas = np.full((100, 100), 255, dtype=np.uint8)
    canvas[20:80, 45:55] = 0  # a dark "1" on white paper
    got = ImagePreparation()(canvas)
    assert got.shape == (1, 28, 28)
    assert got.max() == 255 and got[0, :3].max() == 0  # white ink on black, centred
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    np.testing.assert_array_equal(ImagePreparation()(buf.getvalue()), got)


def test_round_trip_and_old_runs():
    prep = ImagePreparation("photos", (3, 32, 48), "crop")
    assert ImagePreparation.from_dict(prep.to_dict()) == prep
    assert ImagePreparation.from_dict(None) == ImagePreparation("digits", (1, 28, 28))


@pytest.mark.parametrize(
    "kwargs",
    [{"kind": "faces"}, {"resize": "zoom"}, {"shape": (2, 8, 8)}, {"shape": (3, 0, 8)}],
)
def test_bad_settings_are_one_line_errors(kwargs):
    with pytest.raises(CnnlabError):
        ImagePreparation(**{"kind": "photos", **kwargs})


def test_unreadable_pictures_name_themselves(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(CnnlabError, match="notes.png"):
        ImagePreparation("photos", (3, 8, 8))(bad)
    with pytest.raises(CnnlabError, match="shape"):
        ImagePreparation("photos", (3, 8, 8))(np.zeros((4, 4, 2), dtype=np.uint8))
