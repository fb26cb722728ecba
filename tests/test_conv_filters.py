"""The named kernel library against SciPy and against what each kernel should show."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, signal

from cnnlab.conv import apply_kernel, gaussian_matrix, get_kernel, kernel_names, parse_kernel
from cnnlab.conv.filters import display_rgb, log_matrix, to_display
from cnnlab.errors import CnnlabError

ALL = kernel_names()


def _img(shape=(16, 19), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape)


def test_library_has_every_lesson_kernel() -> None:
    for name in [
        "identity", "mean", "gaussian", "prewitt-vertical", "prewitt-horizontal",
        "prewitt-45", "prewitt-135", "sobel-x", "sobel-y", "sobel", "laplacian-4",
        "laplacian-8", "log", "sharpen", "emboss",
    ]:  # fmt: skip
        assert name in ALL
        k = get_kernel(name)
        assert k.description and k.display in ("image", "signed", "magnitude")


@pytest.mark.parametrize("name", [n for n in ALL if n != "sobel"])
def test_each_kernel_matches_scipy_on_grey(name: str) -> None:
    k = get_kernel(name)
    img = _img()
    got = apply_kernel(img, k, padding="same", mode="reflect").numpy()
    want = ndimage.correlate(img, k.matrix.astype(np.float64), mode="mirror")
    np.testing.assert_allclose(got, want, atol=1e-5)
    valid = apply_kernel(img, k, padding="valid").numpy()
    np.testing.assert_allclose(valid, signal.correlate2d(img, k.matrix, "valid"), atol=1e-5)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("stride", [1, 2])
def test_each_kernel_on_rgb_per_channel(name: str, stride: int) -> None:
    k = get_kernel(name)
    img = _img((3, 14, 15), seed=1)
    got = apply_kernel(img, k, stride=stride, padding="same", mode="replicate").numpy()
    for c in range(3):
        parts = k.parts or (k.matrix,)
        resp = [ndimage.correlate(img[c], p.astype(np.float64), mode="nearest") for p in parts]
        want = np.sqrt(sum(r * r for r in resp)) if k.parts else resp[0]
        np.testing.assert_allclose(got[c], want[::stride, ::stride], atol=1e-5)


def test_sobel_matches_scipy_sobel_and_magnitude() -> None:
    img = _img(seed=2)
    sx = apply_kernel(img, "sobel-x", mode="reflect").numpy()
    sy = apply_kernel(img, "sobel-y", mode="reflect").numpy()
    np.testing.assert_allclose(sx, ndimage.sobel(img, axis=1, mode="mirror"), atol=1e-5)
    np.testing.assert_allclose(sy, ndimage.sobel(img, axis=0, mode="mirror"), atol=1e-5)
    mag = apply_kernel(img, "sobel", mode="reflect").numpy()
    np.testing.assert_allclose(mag, np.hypot(sx, sy), atol=1e-5)


@pytest.mark.parametrize("size, sigma", [(5, 1.0), (7, 1.5), (3, 0.8), (9, 2.0)])
def test_gaussian_matches_scipy_gaussian_filter(size: int, sigma: float) -> None:
    img = _img(seed=3)
    k = get_kernel("gaussian", size=size, sigma=sigma)
    assert k.matrix.shape == (size, size)
    assert k.matrix.sum() == pytest.approx(1.0, abs=1e-5)
    got = apply_kernel(img, k, mode="reflect").numpy()
    radius = (size - 1) // 2
    want = ndimage.gaussian_filter(img, sigma, mode="mirror", truncate=radius / sigma)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_gaussian_and_log_size_rules() -> None:
    assert gaussian_matrix().shape == (5, 5)
    assert gaussian_matrix(sigma=1.0).shape == (7, 7)  # 2·ceil(3σ)+1
    assert log_matrix().shape == (9, 9)
    m = log_matrix(sigma=1.0)
    assert m.shape == (7, 7)
    assert abs(float(m.sum())) < 1e-5
    assert m[3, 3] == m.min() < 0  # negative centre like the Laplacians
    np.testing.assert_allclose(m, m.T, atol=1e-7)
    np.testing.assert_allclose(m, m[::-1, ::-1], atol=1e-7)


@pytest.mark.parametrize("size", [1, 3, 5, 7, 11])
def test_mean_of_any_odd_size_is_box_average(size: int) -> None:
    img = _img(seed=4)
    k = get_kernel(f"mean-{size}")
    assert k.matrix.shape == (size, size)
    got = apply_kernel(img, k, padding="valid").numpy()
    want = ndimage.uniform_filter(img, size, mode="mirror")
    r = size // 2
    np.testing.assert_allclose(got, want[r : img.shape[0] - r, r : img.shape[1] - r], atol=1e-5)
    assert get_kernel("box", size=size).matrix.shape == (size, size)


def _edge(kind: str, n: int = 15) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n]
    return {
        "vertical": (x >= n // 2),  # bright right half
        "horizontal": (y >= n // 2),  # bright lower half
        "45": (x + y >= n),  # boundary runs lower-left to upper-right ("/")
        "135": (x >= y),  # boundary runs upper-left to lower-right ("\")
    }[kind].astype(np.float64)


@pytest.mark.parametrize(
    "image, strong, silent",
    [
        ("vertical", "prewitt-vertical", "prewitt-horizontal"),
        ("horizontal", "prewitt-horizontal", "prewitt-vertical"),
        ("vertical", "sobel-x", "sobel-y"),
        ("horizontal", "sobel-y", "sobel-x"),
        ("45", "prewitt-45", "prewitt-135"),
        ("135", "prewitt-135", "prewitt-45"),
    ],
)
def test_edge_kernels_find_their_direction(image: str, strong: str, silent: str) -> None:
    img = _edge(image)
    a = apply_kernel(img, strong, padding="valid").numpy()
    b = apply_kernel(img, silent, padding="valid").numpy()
    assert np.abs(a).max() >= 3
    assert np.abs(b).max() < 0.5 * np.abs(a).max()


def test_edge_signs_follow_brightness_direction() -> None:
    img = _edge("vertical")
    assert apply_kernel(img, "sobel-x", padding="valid").numpy().max() == 4  # dark → bright
    assert apply_kernel(img[:, ::-1], "sobel-x", padding="valid").numpy().min() == -4


def test_flat_image_responses() -> None:
    flat = np.full((9, 9), 0.7)
    for name in ALL:
        out = apply_kernel(flat, name, mode="replicate").numpy()
        k = get_kernel(name)
        expected = 0.0 if k.display != "image" else 0.7 * float(k.matrix.sum())
        np.testing.assert_allclose(out, expected, atol=1e-5, err_msg=name)


def test_laplacians_and_sharpen_relation() -> None:
    img = _img(seed=5)
    lap = apply_kernel(img, "laplacian-4", mode="reflect").numpy()
    sharp = apply_kernel(img, "sharpen", mode="reflect").numpy()
    np.testing.assert_allclose(sharp, img - lap, atol=1e-5)
    np.testing.assert_allclose(
        apply_kernel(img, "laplacian", mode="reflect").numpy(), lap, atol=1e-6
    )
    np.testing.assert_allclose(
        apply_kernel(img, "laplacian-8", mode="reflect").numpy(),
        ndimage.correlate(img, np.array([[1, 1, 1], [1, -8, 1], [1, 1, 1]]), mode="mirror"),
        atol=1e-5,
    )


def test_aliases_and_names() -> None:
    assert get_kernel("prewitt-x").name == "prewitt-vertical"
    assert get_kernel("Sobel_Horizontal").name == "sobel-y"
    assert get_kernel("sobel-magnitude").name == "sobel"
    assert get_kernel("gaussian-7").matrix.shape == (7, 7)
    assert "σ=" in get_kernel("gaussian").name
    assert get_kernel("identity").matrix_text() == "[[0, 0, 0],\n [0, 1, 0],\n [0, 0, 0]]"


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: get_kernel("sobelx"), "unknown kernel 'sobelx'"),
        (lambda: get_kernel("mean", size=4), "must be odd"),
        (lambda: get_kernel("gaussian", size=6), "must be odd"),
        (lambda: get_kernel("gaussian", sigma=0), "sigma 0"),
        (lambda: get_kernel("sobel-x", size=5), "3×3 only"),
        (lambda: get_kernel("mean", sigma=1.0), "no sigma"),
        (lambda: parse_kernel("1,2;3"), "same number"),
        (lambda: parse_kernel("1,x"), "unknown kernel"),
    ],
)
def test_kernel_errors(call, words: str) -> None:
    with pytest.raises(CnnlabError) as info:
        call()
    assert words in str(info.value)


def test_parse_kernel_matrices() -> None:
    k = parse_kernel("1,-1")
    np.testing.assert_array_equal(k.matrix, [[1, -1]])
    assert k.display == "signed"
    k = parse_kernel("1 2; 3 4")
    np.testing.assert_array_equal(k.matrix, [[1, 2], [3, 4]])
    assert k.display == "image"
    assert parse_kernel("sobel-x").name == "sobel-x"


def test_display_mapping() -> None:
    img = _img((3, 10, 12), seed=6)
    arr, kw = to_display(apply_kernel(img, "mean"), get_kernel("mean"))
    assert arr.shape == (10, 12, 3) and arr.min() >= 0 and arr.max() <= 1
    arr, kw = to_display(apply_kernel(img, "sobel-x"), get_kernel("sobel-x"))
    assert arr.shape == (10, 12) and kw["cmap"] == "RdBu_r" and kw["vmin"] == -kw["vmax"]
    arr, kw = to_display(apply_kernel(img, "sobel"), get_kernel("sobel"))
    assert kw["vmin"] == 0 and arr.min() >= 0
    rgb = display_rgb(apply_kernel(img[0], "laplacian-4"), get_kernel("laplacian-4"))
    assert rgb.shape == (10, 12, 3) and rgb.dtype == np.uint8
