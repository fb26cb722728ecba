"""Convolution and pooling functions against independent references (SciPy, NumPy loops)."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage, signal

from cnnlab.conv import channel_mix, conv2d, pool2d, resolve_padding
from cnnlab.conv import ops as conv_ops
from cnnlab.errors import CnnlabError

NP_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge"}


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def ref_pads(padding, kh: int, kw: int) -> tuple[int, int, int, int]:
    """Padding (top, bottom, left, right) written out independently of the library."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":  # k-1 in total, the extra one after (bottom / right)
        return ((kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2)
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    return tuple(padding)


def ref_correlate(img: np.ndarray, k: np.ndarray, stride=(1, 1), pads=(0, 0, 0, 0), mode="zeros"):
    """Cross-correlation of one H×W channel by a plain NumPy loop."""
    p = np.pad(img, ((pads[0], pads[1]), (pads[2], pads[3])), mode=NP_MODES[mode])
    kh, kw = k.shape
    oh = (p.shape[0] - kh) // stride[0] + 1
    ow = (p.shape[1] - kw) // stride[1] + 1
    out = np.zeros((oh, ow))
    for i in range(oh):
        for j in range(ow):
            r, c = i * stride[0], j * stride[1]
            out[i, j] = np.sum(p[r : r + kh, c : c + kw] * k)
    return out


def ref_pool(img: np.ndarray, size, stride, pads, method: str) -> np.ndarray:
    """Max / average / sum pooling of one channel by a NumPy loop."""
    fill = -np.inf if method == "max" else 0.0
    p = np.pad(img, ((pads[0], pads[1]), (pads[2], pads[3])), constant_values=fill)
    kh, kw = size
    oh = (p.shape[0] - kh) // stride[0] + 1
    ow = (p.shape[1] - kw) // stride[1] + 1
    out = np.zeros((oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = p[i * stride[0] : i * stride[0] + kh, j * stride[1] : j * stride[1] + kw]
            out[i, j] = {"max": win.max(), "avg": win.mean(), "sum": win.sum()}[method]
    return out


# ---------------------------------------------------------------- convolution, grey


def test_valid_matches_scipy_correlate2d() -> None:
    img = _rng().random((17, 23))
    k = _rng(1).normal(size=(3, 5))
    got = conv2d(img, k, padding="valid").numpy()
    want = signal.correlate2d(img, k, mode="valid")
    assert got.shape == want.shape == (15, 19)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_zero_same_matches_scipy_for_odd_kernel() -> None:
    img = _rng().random((12, 9))
    k = _rng(2).normal(size=(5, 5))
    got = conv2d(img, k, padding="same").numpy()
    np.testing.assert_allclose(got, signal.correlate2d(img, k, mode="same"), atol=1e-5)


@pytest.mark.parametrize("mode, nd_mode", [("reflect", "mirror"), ("replicate", "nearest")])
def test_border_modes_match_scipy_ndimage(mode: str, nd_mode: str) -> None:
    img = _rng(3).random((14, 11))
    k = _rng(4).normal(size=(3, 3))
    got = conv2d(img, k, padding="same", mode=mode).numpy()
    want = ndimage.correlate(img, k, mode=nd_mode)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("kshape", [(2, 2), (4, 4), (2, 3), (1, 2), (4, 1)])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate"])
def test_even_kernels_same_pad_more_at_the_end(kshape: tuple[int, int], mode: str) -> None:
    img = _rng(5).random((10, 13))
    k = _rng(6).normal(size=kshape)
    got = conv2d(img, k, padding="same", mode=mode).numpy()
    want = ref_correlate(img, k, pads=ref_pads("same", *kshape), mode=mode)
    assert got.shape == img.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert resolve_padding("same", kshape) == ref_pads("same", *kshape)


def test_even_kernel_same_matches_numpy_loop_offsets() -> None:
    # A 2×2 kernel picking its top-left cell: "same" puts no padding before, so the
    # output equals the input exactly (the extra row/column is added at the end).
    img = _rng(7).random((6, 7))
    got = conv2d(img, [[1.0, 0.0], [0.0, 0.0]], padding="same").numpy()
    np.testing.assert_allclose(got, img, atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2, 3, (2, 1), (1, 3)])
@pytest.mark.parametrize("padding", [0, 1, 2, (1, 0), (0, 2, 1, 0), "valid", "same"])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate"])
def test_stride_and_padding_grey(stride, padding, mode: str) -> None:
    img = _rng(8).random((11, 12))
    k = _rng(9).normal(size=(3, 3))
    s = (stride, stride) if isinstance(stride, int) else stride
    got = conv2d(img, k, stride=stride, padding=padding, mode=mode).numpy()
    want = ref_correlate(img, k, s, ref_pads(padding, 3, 3), mode)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_same_with_stride_gives_ceil_size() -> None:
    img = np.zeros((427, 640), dtype=np.float32)
    out = conv2d(img, np.ones((3, 3)), stride=2, padding="same")
    assert tuple(out.shape) == (214, 320)


# ---------------------------------------------------------------- convolution, RGB


def test_rgb_2d_kernel_is_applied_per_channel() -> None:
    img = _rng(10).random((3, 9, 10))
    k = _rng(11).normal(size=(3, 3))
    got = conv2d(img, k, stride=2, padding=1, mode="reflect").numpy()
    assert got.shape == (3, 5, 5)
    for c in range(3):
        want = ref_correlate(img[c], k, (2, 2), (1, 1, 1, 1), "reflect")
        np.testing.assert_allclose(got[c], want, atol=1e-5)


def test_rgb_3d_kernel_sums_channels_into_one() -> None:
    img = _rng(12).random((3, 8, 8))
    k = _rng(13).normal(size=(3, 3, 3))
    got = conv2d(img, k, padding="valid", bias=0.5).numpy()
    want = sum(signal.correlate2d(img[c], k[c], mode="valid") for c in range(3)) + 0.5
    assert got.shape == (1, 6, 6)
    np.testing.assert_allclose(got[0], want, atol=1e-5)


def test_several_output_channels_with_bias_batch() -> None:
    imgs = _rng(14).random((2, 3, 7, 9))
    w = _rng(15).normal(size=(4, 3, 2, 3))
    b = _rng(16).normal(size=4)
    got = conv2d(imgs, w, bias=b, stride=(1, 2), padding="same", mode="replicate").numpy()
    pads = ref_pads("same", 2, 3)
    for n in range(2):
        for o in range(4):
            want = sum(
                ref_correlate(imgs[n, c], w[o, c], (1, 2), pads, "replicate") for c in range(3)
            )
            np.testing.assert_allclose(got[n, o], want + b[o], atol=1e-5)


def test_one_by_one_convolution_mixes_channels() -> None:
    img = _rng(17).random((3, 5, 6))
    m = _rng(18).normal(size=(2, 3))
    want = np.einsum("oc,chw->ohw", m, img)
    np.testing.assert_allclose(channel_mix(img, m).numpy(), want, atol=1e-5)
    np.testing.assert_allclose(conv2d(img, m[:, :, None, None]).numpy(), want, atol=1e-5)


def test_grey_image_shape_is_kept_and_tensor_input_works() -> None:
    img = torch.rand(8, 8)
    assert tuple(conv2d(img, torch.ones(3, 3)).shape) == (6, 6)
    assert conv2d(np.ones((4, 4), np.uint8), np.ones((2, 2))).dtype == torch.float32


def test_large_image_in_strips_matches_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    img = _rng(19).random((3, 61, 47)).astype(np.float32)
    k = _rng(20).normal(size=(5, 5))
    whole = conv2d(img, k, stride=2, padding="same", mode="reflect")
    monkeypatch.setattr(conv_ops, "_STRIP_BYTES", 2000)
    strips = conv2d(img, k, stride=2, padding="same", mode="reflect")
    torch.testing.assert_close(strips, whole)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(3, 12),
    w=st.integers(3, 12),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    s=st.integers(1, 3),
    pad=st.integers(0, 2),
    mode=st.sampled_from(["zeros", "reflect", "replicate"]),
)
def test_random_shapes_match_loop(h, w, kh, kw, s, pad, mode) -> None:
    img = _rng(h * w).random((h, w))
    k = _rng(kh + kw).normal(size=(kh, kw))
    if pad >= min(h, w) and mode == "reflect":
        return
    if kh > h + 2 * pad or kw > w + 2 * pad:
        with pytest.raises(CnnlabError, match="larger than the padded input"):
            conv2d(img, k, stride=s, padding=pad, mode=mode)
        return
    got = conv2d(img, k, stride=s, padding=pad, mode=mode).numpy()
    np.testing.assert_allclose(got, ref_correlate(img, k, (s, s), (pad,) * 4, mode), atol=1e-5)


# ---------------------------------------------------------------- pooling


@pytest.mark.parametrize("method", ["max", "avg", "sum"])
@pytest.mark.parametrize(
    "size, stride, padding",
    [
        (2, None, 0),  # the usual 2×2 / 2
        (3, 2, 0),  # overlapping pooling (AlexNet)
        (3, 1, 1),
        (2, 1, "same"),  # even window, extra padding at the end
        ((2, 3), (1, 2), (1, 0, 0, 2)),
        (3, 3, "valid"),
    ],
)
def test_pooling_matches_loop_grey_and_rgb(method: str, size, stride, padding) -> None:
    img = _rng(21).normal(size=(3, 9, 10))
    ks = (size, size) if isinstance(size, int) else size
    st_ = ks if stride is None else ((stride, stride) if isinstance(stride, int) else stride)
    pads = ref_pads(padding, *ks)
    got = pool2d(img, size, stride=stride, padding=padding, method=method).numpy()
    for c in range(3):
        np.testing.assert_allclose(got[c], ref_pool(img[c], ks, st_, pads, method), atol=1e-5)
    grey = pool2d(img[0], size, stride=stride, padding=padding, method=method).numpy()
    np.testing.assert_allclose(grey, got[0], atol=1e-6)


def test_stride_one_pooling_matches_scipy_filters() -> None:
    img = _rng(22).random((12, 13))
    mx = pool2d(img, 3, stride=1, padding=1, method="max").numpy()
    np.testing.assert_allclose(mx, ndimage.maximum_filter(img, 3, mode="constant", cval=-np.inf))
    avg = pool2d(img, 3, stride=1, padding=1, method="avg").numpy()
    np.testing.assert_allclose(avg, ndimage.uniform_filter(img, 3, mode="constant"), atol=1e-6)
    sm = pool2d(img, 3, stride=1, padding=1, method="sum").numpy()
    np.testing.assert_allclose(sm, 9 * ndimage.uniform_filter(img, 3, mode="constant"), atol=1e-5)


def test_max_pool_padding_never_wins() -> None:
    img = -np.ones((4, 4))
    assert float(pool2d(img, 3, stride=1, padding=1).max()) == -1.0


def test_average_and_sum_pooling_count_padded_zeros() -> None:
    out = pool2d(np.ones((4, 4)), 3, stride=1, padding=1, method="avg").numpy()
    assert out[0, 0] == pytest.approx(4 / 9)  # corner window: 4 real cells, 5 padded zeros
    assert out[1, 1] == pytest.approx(1.0)  # an inner window holds no padding
    total = pool2d(np.ones((4, 4)), 3, stride=1, padding=1, method="sum").numpy()
    assert total[0, 0] == pytest.approx(4.0) and total[1, 1] == pytest.approx(9.0)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3)), stride=0), "stride 0"),
        (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3)), stride=-1), "stride -1"),
        (lambda: conv2d(np.ones((5, 5)), np.ones((7, 7)), name="blur"), "blur: kernel 7×7"),
        (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3)), padding="full"), "padding 'full'"),
        (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3)), padding=-1), "negative"),
        (lambda: conv2d(np.ones((3, 3)), np.ones((3, 3)), padding=3, mode="reflect"), "reflect"),
        (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3)), mode="wrap"), "border mode"),
        (lambda: conv2d(np.ones((3, 5, 5)), np.ones((2, 3, 3))), "2 input channels"),
        (lambda: conv2d(np.ones(5), np.ones((3, 3))), "shape"),
        (lambda: pool2d(np.ones((5, 5)), 2, method="median"), "median"),
        (lambda: pool2d(np.ones((5, 5)), 2, stride=0), "stride 0"),
        (lambda: pool2d(np.ones((3, 3)), 4), "larger than the padded input"),
    ],
)
def test_bad_arguments_are_clear_errors(call, words: str) -> None:
    with pytest.raises(CnnlabError) as info:
        call()
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_tutorial_examples_are_true() -> None:
    """The Python examples of docs/convolution.md give the outputs printed there."""
    doc = Path(__file__).resolve().parents[1] / "docs" / "convolution.md"
    result = doctest.testfile(str(doc), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 7 and result.failed == 0
