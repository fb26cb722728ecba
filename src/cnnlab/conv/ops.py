"""Convolution and pooling as plain functions, built on torch's own conv and pool ops.

Images follow torch's layout: ``H×W`` (grey), ``C×H×W`` or a batch ``N×C×H×W``. NumPy
arrays and tensors are both accepted; results are float32 tensors with the same number
of leading dimensions as the input (an ``H×W`` image whose result has one channel comes
back as ``H'×W'``).

As in every CNN framework, "convolution" here is cross-correlation: the kernel is laid
on the image as written, without flipping it.

Padding is given as

* an int ``p`` (``p`` rows/columns on every side) or a pair ``(ph, pw)``;
* a 4-tuple ``(top, bottom, left, right)`` for explicit asymmetric padding;
* ``"valid"`` (no padding: the output shrinks by ``k - 1``);
* ``"same"``: ``k - 1`` in total per axis, ``(k - 1) // 2`` before and the rest after,
  so an even kernel gets its extra row at the bottom and its extra column at the right
  (TensorFlow's convention). With stride 1 the size is kept; with stride ``s`` the
  output has ``ceil(in / s)`` rows and columns.

Border modes say what the padding holds: ``"zeros"``, ``"reflect"`` (mirror without
repeating the edge pixel) or ``"replicate"`` (repeat the edge pixel).

Large inputs are convolved in horizontal strips, so memory stays bounded whatever the
photo's size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError

Padding = int | tuple[int, int] | tuple[int, int, int, int] | str
"""A padding specification (see the module documentation)."""

BORDER_MODES = ("zeros", "reflect", "replicate")
POOL_METHODS = ("max", "avg", "sum")

# Above this many bytes of unfolded input (im2col), convolve in row strips.
_STRIP_BYTES = 64 * 1024 * 1024


def to_tensor(image: Any, *, name: str = "image") -> tuple[torch.Tensor, int]:
    """``image`` as a float32 ``N×C×H×W`` tensor, plus its original number of dimensions."""
    t = image if isinstance(image, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(image))
    if t.ndim not in (2, 3, 4):
        raise CnnlabError(f"{name} has shape {tuple(t.shape)}; expected H×W, C×H×W or N×C×H×W")
    ndim = t.ndim
    t = t.detach().to(torch.float32)
    while t.ndim < 4:
        t = t.unsqueeze(0)
    return t, ndim


def _restore(t: torch.Tensor, ndim: int) -> torch.Tensor:
    if ndim == 4:
        return t
    t = t[0]
    if ndim == 2 and t.shape[0] == 1:
        return t[0]
    return t


def _pair(value: int | tuple[int, int] | list[int], what: str, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        pair = (int(value), int(value))
    else:
        vals = tuple(int(v) for v in value)
        if len(vals) != 2:
            raise CnnlabError(f"{name}: {what} {value!r} must be one number or a pair")
        pair = (vals[0], vals[1])
    return pair


def resolve_stride(stride: int | tuple[int, int], *, name: str = "kernel") -> tuple[int, int]:
    """Stride as ``(sh, sw)``; zero or negative strides are a :class:`CnnlabError`."""
    sh, sw = _pair(stride, "stride", name)
    if sh < 1 or sw < 1:
        raise CnnlabError(f"{name}: stride {stride!r} must be a positive whole number")
    return sh, sw


def resolve_padding(
    padding: Padding, kernel_size: int | tuple[int, int], *, name: str = "kernel"
) -> tuple[int, int, int, int]:
    """Padding as ``(top, bottom, left, right)`` for a kernel of ``kernel_size``."""
    kh, kw = _pair(kernel_size, "kernel size", name)
    if isinstance(padding, str):
        key = padding.lower()
        if key == "valid":
            return (0, 0, 0, 0)
        if key == "same":
            th, tw = kh - 1, kw - 1
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        raise CnnlabError(
            f"{name}: padding {padding!r} must be a number, a pair, 'valid' or 'same'"
        )
    if isinstance(padding, (int, np.integer)):
        p = int(padding)
        pads = (p, p, p, p)
    else:
        vals = tuple(int(v) for v in padding)
        if len(vals) == 2:
            pads = (vals[0], vals[0], vals[1], vals[1])
        elif len(vals) == 4:
            pads = (vals[0], vals[1], vals[2], vals[3])
        else:
            raise CnnlabError(
                f"{name}: padding {padding!r} must be a number, a pair (rows, columns) "
                "or four numbers (top, bottom, left, right)"
            )
    if min(pads) < 0:
        raise CnnlabError(f"{name}: padding {padding!r} cannot be negative")
    return pads


def pad_image(
    x: torch.Tensor,
    pads: tuple[int, int, int, int],
    mode: str = "zeros",
    *,
    value: float = 0.0,
    name: str = "kernel",
) -> torch.Tensor:
    """Pad an ``N×C×H×W`` tensor by ``(top, bottom, left, right)`` in a border ``mode``."""
    if mode not in BORDER_MODES and mode != "constant":
        raise CnnlabError(f"{name}: border mode {mode!r} is not one of {', '.join(BORDER_MODES)}")
    top, bottom, left, right = pads
    if not any(pads):
        return x
    torch_pads = (left, right, top, bottom)
    if mode in ("zeros", "constant"):
        return F.pad(x, torch_pads, mode="constant", value=value)
    if mode == "reflect":
        h, w = x.shape[-2:]
        if max(top, bottom) >= h or max(left, right) >= w:
            raise CnnlabError(
                f"{name}: reflect padding {pads} needs an input larger than the padding, "
                f"got {h}×{w}"
            )
    return F.pad(x, torch_pads, mode=mode)


def _check_fits(
    size: tuple[int, int], kernel: tuple[int, int], pads: tuple[int, int, int, int], name: str
) -> None:
    ph, pw = size[0] + pads[0] + pads[1], size[1] + pads[2] + pads[3]
    if kernel[0] > ph or kernel[1] > pw:
        raise CnnlabError(
            f"{name}: kernel {kernel[0]}×{kernel[1]} is larger than the padded input {ph}×{pw}"
        )


def _conv_strips(
    x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int], groups: int
) -> torch.Tensor:
    """``F.conv2d`` on an already padded input, in row strips when the input is large."""
    n, cin, h, w = x.shape
    cout, _, kh, kw = weight.shape
    out_h = (h - kh) // stride[0] + 1
    out_w = (w - kw) // stride[1] + 1
    unfolded = 4 * n * cin * kh * kw * out_h * out_w
    if unfolded <= _STRIP_BYTES or out_h < 2:
        return F.conv2d(x, weight, stride=stride, groups=groups)
    rows = max(1, int(out_h * _STRIP_BYTES / unfolded))
    out = x.new_empty((n, cout, out_h, out_w))
    for r0 in range(0, out_h, rows):
        r1 = min(out_h, r0 + rows)
        part = x[:, :, r0 * stride[0] : (r1 - 1) * stride[0] + kh, :]
        out[:, :, r0:r1, :] = F.conv2d(part, weight, stride=stride, groups=groups)
    return out


def conv2d(
    image: Any,
    kernel: Any,
    *,
    stride: int | tuple[int, int] = 1,
    padding: Padding = 0,
    mode: str = "zeros",
    bias: Any = None,
    name: str = "kernel",
) -> torch.Tensor:
    """Convolve (cross-correlate) ``image`` with ``kernel``.

    ``kernel`` may be

    * ``kh×kw``: the same 2-D kernel applied to every channel separately (a grey image
      gives one channel; an RGB image gives three filtered channels);
    * ``C×kh×kw``: one kernel per input channel, the results summed into a single
      output channel (a convolution layer with one filter);
    * ``Cout×C×kh×kw``: ``Cout`` such filters, torch's weight layout; with
      ``kh = kw = 1`` this is a 1×1 convolution that mixes channels at each pixel.

    ``bias`` (one number or one per output channel) is added afterwards, as a layer does.
    ``name`` labels error messages (e.g. the kernel's or layer's name).
    """
    x, ndim = to_tensor(image, name="image")
    k = (
        kernel
        if isinstance(kernel, torch.Tensor)
        else torch.as_tensor(np.ascontiguousarray(kernel))
    )
    k = k.detach().to(torch.float32)
    cin = x.shape[1]
    if k.ndim == 2:
        weight = k.expand(cin, 1, *k.shape).contiguous()
        groups = cin
    elif k.ndim == 3:
        weight, groups = k.unsqueeze(0), 1
    elif k.ndim == 4:
        weight, groups = k, 1
    else:
        raise CnnlabError(
            f"{name}: kernel shape {tuple(k.shape)} must be kh×kw, C×kh×kw or Cout×C×kh×kw"
        )
    if groups == 1 and weight.shape[1] != cin:
        raise CnnlabError(
            f"{name}: kernel has {weight.shape[1]} input channels but the image has {cin}"
        )
    kh, kw = weight.shape[-2:]
    if kh < 1 or kw < 1:
        raise CnnlabError(f"{name}: kernel is empty")
    strides = resolve_stride(stride, name=name)
    pads = resolve_padding(padding, (kh, kw), name=name)
    _check_fits(tuple(x.shape[-2:]), (kh, kw), pads, name)
    out = _conv_strips(pad_image(x, pads, mode, name=name), weight, strides, groups)
    if bias is not None:
        b = torch.as_tensor(np.ascontiguousarray(bias), dtype=torch.float32).reshape(-1)
        if b.numel() not in (1, out.shape[1]):
            raise CnnlabError(
                f"{name}: bias has {b.numel()} values for {out.shape[1]} output channels"
            )
        out = out + b.reshape(1, -1, 1, 1)
    return _restore(out, ndim)


def channel_mix(image: Any, weights: Any, *, bias: Any = None) -> torch.Tensor:
    """A 1×1 convolution: ``weights`` (``Cout×C``) mixes the channels at every pixel.

    Equivalent to a fully connected layer applied to each pixel's channel vector.
    """
    w = torch.as_tensor(np.ascontiguousarray(weights), dtype=torch.float32)
    if w.ndim == 1:
        w = w.unsqueeze(0)
    if w.ndim != 2:
        raise CnnlabError(f"1×1 kernel shape {tuple(w.shape)} must be Cout×C")
    return conv2d(image, w[:, :, None, None], bias=bias, name="1×1 kernel")


def pool2d(
    image: Any,
    size: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] | None = None,
    padding: Padding = 0,
    method: str = "max",
    name: str = "pooling",
) -> torch.Tensor:
    """Max, average or sum pooling of every channel over ``size`` windows.

    ``stride`` defaults to the window size (non-overlapping windows); a smaller stride
    gives overlapping pooling. Padding holds ``-inf`` for max pooling (a padded cell never
    wins) and zeros for average and sum pooling, which count the padded cells in the
    window (torch's ``count_include_pad=True``). Sum pooling is average pooling times the
    window area.
    """
    if method not in POOL_METHODS:
        raise CnnlabError(f"{name}: method {method!r} is not one of {', '.join(POOL_METHODS)}")
    x, ndim = to_tensor(image, name="image")
    kh, kw = _pair(size, "window", name)
    if kh < 1 or kw < 1:
        raise CnnlabError(f"{name}: window {size!r} must be a positive whole number")
    strides = resolve_stride((kh, kw) if stride is None else stride, name=name)
    pads = resolve_padding(padding, (kh, kw), name=name)
    _check_fits(tuple(x.shape[-2:]), (kh, kw), pads, name)
    fill = -math.inf if method == "max" else 0.0
    xp = pad_image(x, pads, "constant", value=fill, name=name)
    if method == "max":
        out = F.max_pool2d(xp, (kh, kw), stride=strides)
    else:
        out = F.avg_pool2d(xp, (kh, kw), stride=strides)
        if method == "sum":
            out = out * (kh * kw)
    return _restore(out, ndim)
