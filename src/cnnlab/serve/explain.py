"""The explorable page's model work: every layer's output for one image, and one unit's
arithmetic with the real numbers.

The model is walked generically: each leaf module's call is recorded with a forward hook
(:mod:`cnnlab.models.trace`), whatever the architecture (tutorial CNNs, VGG, residual
blocks, ``cifar-net``'s whitening stem and ``Scale`` head, AlexNet...). It is the run's
plain model (``Run.model``), not the speed layer's rewritten forward (``Run.predictor``
may fuse a convolution with its pooling and activation): fused modules compute the same
numbers but hide the steps the page explains. Batch normalisation is shown as its own
step, with its running statistics, rather than folded into the convolution before it.

Maps travel compactly: each channel is quantised to 256 levels between its own minimum
and maximum and sent as base64 bytes with that range, so one JSON answer holds every
layer of a small network in a few tens of kilobytes and the page draws them with
``putImageData``.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.models.trace import LayerCall, trace_layers

__all__ = [
    "Step",
    "activation_formula",
    "describe_steps",
    "explain_unit",
    "layer_outputs",
    "quantise",
    "receptive_field",
    "trace_steps",
]

#: Element-wise activations and how the page writes them.
ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.ReLU: "max(0, z)",
    nn.ReLU6: "min(max(0, z), 6)",
    nn.LeakyReLU: "z if z > 0 else slope·z",
    nn.GELU: "z·Φ(z)",
    nn.SiLU: "z·σ(z)",
    nn.ELU: "z if z > 0 else α(eᶻ − 1)",
    nn.Tanh: "tanh(z)",
    nn.Sigmoid: "σ(z) = 1/(1 + e⁻ᶻ)",
    nn.Softplus: "log(1 + eᶻ)",
    nn.Hardtanh: "min(max(z, −1), 1)",
    nn.Mish: "z·tanh(softplus(z))",
}
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)
#: Units of a dense layer's answer and terms of a dense unit's sum shown at most.
MAX_UNITS = 4096
TOP_TERMS = 12
#: Input channels of a convolution unit drawn with their kernels, at most.
MAX_KERNELS = 16


@dataclass
class Step:
    """One layer call of the walk: its position, the call, and the step that produced its
    input (None: the model's input)."""

    index: int
    call: LayerCall
    source: int | None

    @property
    def module(self) -> nn.Module:
        return self.call.module

    @property
    def input(self) -> torch.Tensor:
        x = self.call.input
        assert x is not None
        return x

    @property
    def output(self) -> torch.Tensor:
        return self.call.output


def kind_of(module: nn.Module) -> str:
    """What the page does with a layer: conv, pool, act, bn, dense or other."""
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, POOLS):
        return "pool"
    if isinstance(module, tuple(ACTIVATIONS)):
        return "act"
    if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
        return "bn"
    if isinstance(module, nn.Linear):
        return "dense"
    return "other"


def trace_steps(model: nn.Module, x: torch.Tensor) -> list[Step]:
    """``model`` run on ``x`` (one image), each leaf call with its input's producer.

    A call's producer is the earlier call whose output *is* its input tensor; an input
    made outside any leaf (a residual block's ``out + shortcut``) is credited to the
    call with an output of its shape whose receptive field is the largest (the block's
    main path rather than its shortcut; the latest of equals); the model's own input has
    none.
    """
    calls = [
        c
        for c in trace_layers(model, x)
        if isinstance(c.output, torch.Tensor) and c.input is not None
    ]
    steps: list[Step] = []
    for i, call in enumerate(calls):
        source = None
        inp = call.input
        if inp is not x:
            same = [j for j in range(i) if calls[j].output is inp]
            if not same:
                same = [j for j in range(i) if calls[j].output.shape == inp.shape]
                same.sort(key=lambda j: _span(steps, j, tuple(x.shape[2:])))
            source = same[-1] if same else None
        steps.append(Step(i, call, source))
    return steps


def _span(steps: list[Step], index: int, input_hw: tuple[int, int]) -> int:
    """The receptive field's area of the middle unit of step ``index``'s output."""
    out = steps[index].output
    if out.ndim != 4:
        return input_hw[0] * input_hw[1]
    top, left, bottom, right = receptive_field(
        steps, index, out.shape[2] // 2, out.shape[3] // 2, input_hw
    )
    return (bottom - top + 1) * (right - left + 1)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def geometry(module: nn.Module) -> dict[str, tuple[int, int]] | None:
    """Kernel, stride, padding and dilation of a sliding-window layer, else None."""
    if isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        k = _pair(module.kernel_size)
        return {
            "kernel": k,
            "stride": _pair(module.stride if module.stride is not None else k),
            "padding": _pair(module.padding) if not isinstance(module.padding, str) else (0, 0),
            "dilation": _pair(getattr(module, "dilation", 1)),
        }
    return None


def _adaptive_window(i: int, size_in: int, size_out: int) -> tuple[int, int]:
    """Rows (or columns) [start, end) that adaptive pooling averages for output ``i``."""
    return (i * size_in) // size_out, math.ceil((i + 1) * size_in / size_out)


def _window_in(
    step: Step, y: tuple[int, int], x: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The input rows and columns (inclusive, unclipped) that output rows ``y`` and
    columns ``x`` of ``step`` depend on; None when every input element counts."""
    m, inp = step.module, step.input
    if inp.ndim != 4 or step.output.ndim != 4:
        return None
    geo = geometry(m)
    if geo is not None:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
            geo["kernel"],
            geo["stride"],
            geo["padding"],
            geo["dilation"],
        )
        return (
            (y[0] * sh - ph, y[1] * sh - ph + dh * (kh - 1)),
            (x[0] * sw - pw, x[1] * sw - pw + dw * (kw - 1)),
        )
    if isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
        (hi, wi), (ho, wo) = inp.shape[2:], step.output.shape[2:]
        ya, yb = _adaptive_window(y[0], hi, ho)[0], _adaptive_window(y[1], hi, ho)[1] - 1
        xa, xb = _adaptive_window(x[0], wi, wo)[0], _adaptive_window(x[1], wi, wo)[1] - 1
        return (ya, yb), (xa, xb)
    if inp.shape[2:] == step.output.shape[2:]:  # element-wise: BN, activations, Scale...
        return y, x
    return None


def receptive_field(
    steps: list[Step], index: int, y: int, x: int, input_hw: tuple[int, int]
) -> list[int]:
    """``[top, left, bottom, right]`` (inclusive, clipped) of the model-input pixels that
    unit ``(y, x)`` of step ``index``'s output depends on, following each step's input
    back to the model's input; the whole input for a unit of a dense layer."""
    height, width = input_hw
    whole = [0, 0, height - 1, width - 1]
    rows, cols = (y, y), (x, x)
    step: Step | None = steps[index]
    if step.output.ndim != 4:
        return whole
    while step is not None:
        window = _window_in(step, rows, cols)
        if window is None:
            return whole
        rows, cols = window
        step = steps[step.source] if step.source is not None else None
    return [max(0, rows[0]), max(0, cols[0]), min(height - 1, rows[1]), min(width - 1, cols[1])]


def quantise(maps: np.ndarray) -> tuple[str, list[float], list[float]]:
    """Channels (C×H×W floats) as base64 uint8 levels, each scaled between its own
    minimum and maximum (returned, rounded to 5 significant digits); a flat channel is 0."""
    flat = maps.reshape(len(maps), -1).astype(np.float32)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    span = np.where(hi > lo, hi - lo, 1.0)
    levels = np.rint((flat - lo[:, None]) * (255.0 / span[:, None]))
    data = np.clip(levels, 0, 255).astype(np.uint8).tobytes()
    return (
        base64.b64encode(data).decode("ascii"),
        [float(f"{v:.5g}") for v in lo],
        [float(f"{v:.5g}") for v in hi],
    )


def _param_text(m: nn.Module) -> str:
    geo = geometry(m)
    if isinstance(m, nn.Conv2d) and geo:
        k, s, p = geo["kernel"], geo["stride"], geo["padding"]
        return f"{m.out_channels}@{k[0]}×{k[1]}, stride {s[0]}, padding {p[0]}"
    if geo:
        k, s = geo["kernel"], geo["stride"]
        return f"{k[0]}×{k[1]}, stride {s[0]}"
    if isinstance(m, nn.Linear):
        return f"{m.in_features} → {m.out_features}"
    if isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
        return f"to {m.output_size}"
    if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
        return f"{m.num_features} channels"
    factor = getattr(m, "factor", None)
    if isinstance(factor, float):
        return f"× {factor:.4g}"
    return ""


def describe_steps(steps: list[Step]) -> list[dict[str, Any]]:
    """Each step as the page's overview column heads it."""
    rows = []
    for s in steps:
        m = s.module
        rows.append(
            {
                "id": s.index,
                "name": s.call.name,
                "type": type(m).__name__,
                "kind": kind_of(m),
                "params": _param_text(m),
                "input_shape": list(s.input.shape[1:]),
                "shape": list(s.output.shape[1:]),
                "source": s.source,
            }
        )
    return rows


def layer_outputs(steps: list[Step], max_channels: int = 64) -> list[dict[str, Any]]:
    """Each step's output for the page: maps (C×H×W) quantised, vectors as numbers."""
    layers = []
    for s in steps:
        if isinstance(s.module, nn.Flatten):  # the maps before it, laid end to end
            layers.append({"id": s.index, "flatten": True})
            continue
        out = s.output.detach()[0].float().cpu().numpy()
        if out.ndim == 3:
            data, lo, hi = quantise(out[:max_channels])
            layers.append({"id": s.index, "maps": data, "lo": lo, "hi": hi})
        else:
            values = out.reshape(-1)[:MAX_UNITS]
            layers.append({"id": s.index, "values": [float(f"{v:.5g}") for v in values]})
    return layers


def picture(image: np.ndarray, x: torch.Tensor) -> tuple[list[int], str]:
    """What the page shows as the input, in the model's input coordinates (where
    receptive fields are drawn): the prepared uint8 image when the model sees it at that
    size, else the model's input scaled to 0..255 over all its channels together (a
    digit padded to 32×32 for LeNet-5, resized to 227×227 for AlexNet)."""
    model_in = x.detach()[0].float().cpu().numpy()
    if image.shape[1:] == model_in.shape[1:] and image.shape[0] == model_in.shape[0]:
        pixels = image
    else:
        lo, hi = float(model_in.min()), float(model_in.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        pixels = np.clip(np.rint((model_in - lo) * scale), 0, 255).astype(np.uint8)
    return list(pixels.shape), base64.b64encode(np.ascontiguousarray(pixels).tobytes()).decode()


def _r(v: float) -> float:
    return float(f"{float(v):.6g}")


def _grid(a: torch.Tensor | np.ndarray) -> list[Any]:
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
    return np.vectorize(_r, otypes=[float])(arr).tolist() if arr.size else arr.tolist()


def activation_formula(module: nn.Module) -> str:
    """The element-wise function of an activation layer, in words."""
    for cls, text in ACTIVATIONS.items():
        if isinstance(module, cls):
            return text
    return type(module).__name__


def _next_activation(steps: list[Step], index: int) -> Step | None:
    """The activation step that takes step ``index``'s output directly, if any."""
    for s in steps[index + 1 :]:
        if s.source == index and kind_of(s.module) == "act":
            return s
    return None


def _unit_position(out: torch.Tensor, c: int, y: int, x: int) -> tuple[int, ...]:
    return (0, c, y, x) if out.ndim == 4 else (0, c)


def _flat_name(steps: list[Step], step: Step, i: int) -> str:
    """Input ``i`` of a dense layer in words: a map position when it comes from a
    flattened stack of maps."""
    if step.source is not None:
        src = steps[step.source]
        if src.output.ndim == 2 and src.input.ndim == 4:
            _, c, h, w = src.input.shape
            return f"map {i // (h * w)} at ({(i % (h * w)) // w}, {i % w})"
        return f"unit {i} of layer {src.call.name}"
    return f"input {i}"


def explain_unit(
    steps: list[Step], index: int, c: int, y: int, x: int, input_hw: tuple[int, int]
) -> dict[str, Any]:
    """Unit ``c`` (at ``(y, x)`` for maps) of step ``index``: how its value is computed
    from the step's input, with the real numbers; raises ValueError for a unit outside
    the output."""
    step = steps[index]
    m, inp, out = step.module, step.input.detach().float(), step.output.detach().float()
    if out.ndim == 4:
        _, ch, h, w = out.shape
        if not (0 <= c < ch and 0 <= y < h and 0 <= x < w):
            raise ValueError(f"unit ({c}, {y}, {x}) is outside the layer's {ch}×{h}×{w} output")
    elif out.ndim == 2:
        if not 0 <= c < out.shape[1]:
            raise ValueError(f"unit {c} is outside the layer's {out.shape[1]} outputs")
        y = x = 0
    else:
        raise ValueError("this layer's output is not a map stack nor a vector")
    value = float(out[_unit_position(out, c, y, x)])
    kind = kind_of(m)
    detail: dict[str, Any] = {
        "id": index,
        "name": step.call.name,
        "type": type(m).__name__,
        "kind": kind,
        "unit": [c, y, x] if out.ndim == 4 else [c],
        "value": _r(value),
        "receptive_field": receptive_field(steps, index, y, x, input_hw),
    }
    if isinstance(m, nn.Conv2d):
        detail.update(_conv_unit(m, inp, c, y, x))
    elif isinstance(m, POOLS) and inp.ndim == 4:
        detail.update(_pool_unit(step, inp, c, y, x))
    elif isinstance(m, nn.Linear):
        detail.update(_dense_unit(steps, step, inp, c))
    elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) and not m.training:
        detail.update(_bn_unit(m, inp, c, y, x))
    else:
        z = float(inp[_unit_position(inp, c, y, x)]) if inp.shape == out.shape else None
        detail["formula"] = activation_formula(m) if kind == "act" else type(m).__name__
        detail["z"] = None if z is None else _r(z)
    after = _next_activation(steps, index)
    if after is not None and kind != "act":
        a = after.output.detach().float()
        detail["activation"] = {
            "name": after.call.name,
            "type": type(after.module).__name__,
            "formula": activation_formula(after.module),
            "value": _r(float(a[_unit_position(a, c, y, x)])),
        }
    return detail


def _conv_unit(m: nn.Conv2d, inp: torch.Tensor, c: int, y: int, x: int) -> dict[str, Any]:
    geo = geometry(m)
    assert geo is not None
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        geo["kernel"],
        geo["stride"],
        geo["padding"],
        geo["dilation"],
    )
    groups = m.groups
    per_group = m.in_channels // groups
    first = (c // (m.out_channels // groups)) * per_group
    padded = torch.nn.functional.pad(inp[0], (pw, pw, ph, ph))
    rows = slice(y * sh, y * sh + dh * (kh - 1) + 1, dh)
    cols = slice(x * sw, x * sw + dw * (kw - 1) + 1, dw)
    patch = padded[first : first + per_group, rows, cols]
    weight = m.weight.detach().float()[c]
    partial = (weight * patch).sum(dim=(1, 2))
    bias = float(m.bias.detach()[c]) if m.bias is not None else 0.0
    order = torch.argsort(partial.abs(), descending=True)[:MAX_KERNELS].tolist()
    shown = sorted(order)
    return {
        "formula": "Σ w·x + b",
        "kernel_size": [kh, kw],
        "stride": [sh, sw],
        "padding": [ph, pw],
        "in_channels": per_group,
        "channels": [
            {
                "channel": first + i,
                "kernel": _grid(weight[i]),
                "patch": _grid(patch[i]),
                "sum": _r(partial[i]),
            }
            for i in shown
        ],
        "others_sum": _r(float(partial.sum()) - float(partial[shown].sum())),
        "sum": _r(partial.sum()),
        "bias": _r(bias),
        "z": _r(float(partial.sum()) + bias),
    }


def _pool_unit(step: Step, inp: torch.Tensor, c: int, y: int, x: int) -> dict[str, Any]:
    m = step.module
    window = _window_in(step, (y, y), (x, x))
    assert window is not None
    (top, bottom), (left, right) = window
    h, w = inp.shape[2:]
    geo = geometry(m)
    dil = geo["dilation"] if geo else (1, 1)
    rows = list(range(top, bottom + 1, dil[0]))
    cols = list(range(left, right + 1, dil[1]))
    is_max = isinstance(m, nn.MaxPool2d | nn.AdaptiveMaxPool2d)
    pad_value = float("-inf") if is_max else 0.0
    values = [
        [float(inp[0, c, r, q]) if 0 <= r < h and 0 <= q < w else pad_value for q in cols]
        for r in rows
    ]
    flat = [v for row in values for v in row]
    if is_max:
        best = max(range(len(flat)), key=lambda i: flat[i])
        z = flat[best]
        where = [best // len(cols), best % len(cols)]
        formula = "max of the window"
    else:
        inside = [float(inp[0, c, r, q]) for r in rows for q in cols if 0 <= r < h and 0 <= q < w]
        count_pad = getattr(m, "count_include_pad", False)
        n = len(flat) if count_pad else len(inside)
        z = sum(inside) / max(1, n)
        where = None
        formula = f"mean of the window (÷ {n})"
    return {
        "formula": formula,
        "window": [[_r(v) if math.isfinite(v) else None for v in row] for row in values],
        "window_origin": [top, left],
        "argmax": where,
        "z": _r(z),
    }


def _dense_unit(steps: list[Step], step: Step, inp: torch.Tensor, c: int) -> dict[str, Any]:
    m = step.module
    assert isinstance(m, nn.Linear)
    xs = inp.reshape(-1)
    weight = m.weight.detach().float()[c]
    terms = weight * xs
    bias = float(m.bias.detach()[c]) if m.bias is not None else 0.0
    order = torch.argsort(terms.abs(), descending=True)[:TOP_TERMS].tolist()
    top_sum = float(terms[order].sum())
    return {
        "formula": "Σ w·x + b",
        "in_features": int(xs.numel()),
        "terms": [
            {
                "input": i,
                "where": _flat_name(steps, step, i),
                "w": _r(weight[i]),
                "x": _r(xs[i]),
                "wx": _r(terms[i]),
            }
            for i in order
        ],
        "others_sum": _r(float(terms.sum()) - top_sum),
        "others_count": int(xs.numel()) - len(order),
        "sum": _r(terms.sum()),
        "bias": _r(bias),
        "z": _r(float(terms.sum()) + bias),
    }


def _bn_unit(m: nn.Module, inp: torch.Tensor, c: int, y: int, x: int) -> dict[str, Any]:
    assert isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d)
    xv = float(inp[_unit_position(inp, c, y, x)])
    mean = float(m.running_mean[c]) if m.running_mean is not None else 0.0
    var = float(m.running_var[c]) if m.running_var is not None else 1.0
    gamma = float(m.weight.detach()[c]) if m.weight is not None else 1.0
    beta = float(m.bias.detach()[c]) if m.bias is not None else 0.0
    z = (xv - mean) / math.sqrt(var + m.eps) * gamma + beta
    return {
        "formula": "(x − μ) / √(σ² + ε) · γ + β",
        "x": _r(xv),
        "mean": _r(mean),
        "var": _r(var),
        "eps": m.eps,
        "gamma": _r(gamma),
        "beta": _r(beta),
        "z": _r(z),
    }


def explain_output(steps: list[Step], logits: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """The output layer in numbers: logits, the softmax of each, and why the top class won
    (its logit's margin over the runner-up, split into the last dense layer's largest
    differences of contributions ``(w_top − w_second)·x``)."""
    z = logits.detach().float().reshape(-1)
    exps = torch.exp(z - z.max())
    probs = exps / exps.sum()
    order = torch.argsort(z, descending=True).tolist()
    top, second = order[0], order[1] if len(order) > 1 else order[0]
    answer: dict[str, Any] = {
        "classes": list(classes),
        "logits": [_r(v) for v in z],
        "exp": [_r(v) for v in exps],  # e^(z − max z): the same ratios, no overflow
        "exp_sum": _r(exps.sum()),
        "max_logit": _r(z.max()),
        "probabilities": [_r(v) for v in probs],
        "top": top,
        "second": second,
        "margin": _r(z[top] - z[second]),
    }
    dense = [s for s in steps if isinstance(s.module, nn.Linear)]
    if dense:
        last = dense[-1]
        m = last.module
        assert isinstance(m, nn.Linear)
        if m.out_features == len(z):
            after = steps[last.index + 1 :]
            factor = 1.0
            for s in after:
                factor *= float(getattr(s.module, "factor", 1.0))
            xs = last.input.detach().float().reshape(-1)
            w = m.weight.detach().float()
            diff = (w[top] - w[second]) * xs
            b = None if m.bias is None else m.bias.detach().float()
            bias = 0.0 if b is None else float(b[top] - b[second])
            idx = torch.argsort(diff.abs(), descending=True)[:TOP_TERMS].tolist()
            answer["why"] = {
                "layer": last.call.name,
                "scale": _r(factor),
                "terms": [
                    {
                        "input": i,
                        "where": _flat_name(steps, last, i),
                        "x": _r(xs[i]),
                        "w_top": _r(w[top, i]),
                        "w_second": _r(w[second, i]),
                        "diff": _r(diff[i]),
                    }
                    for i in idx
                ],
                "others_sum": _r(float(diff.sum()) - float(diff[idx].sum())),
                "bias_diff": _r(bias),
                "total": _r((float(diff.sum()) + bias) * factor),
            }
    return answer
