"""Layer arithmetic: output sizes, receptive fields and parameter counts, layer by layer.

The output size of a convolution or pooling along one axis is

    out = floor((in + pad_before + pad_after - dilation·(kernel - 1) - 1) / stride) + 1

which for dilation 1 and symmetric padding is the tutorials' ``(in + 2·pad - kernel) /
stride + 1``. :func:`layer_table` runs a model once on a dummy input of its declared size,
watching every leaf module (:mod:`cnnlab.models.trace`), and records, for each call, the
layer's kernel, stride, padding, output shape (printed ``H×W×C`` like the tutorials),
receptive field and the parameter count written out as a formula.

The receptive field ``r`` and jump ``j`` (distance in input pixels between neighbouring
output cells) follow ``r_out = r_in + (k - 1)·d·j_in`` and ``j_out = j_in·s``. They
follow the module calls in order, so a branch joined by an addition takes the receptive
field of the branch computed last; dense layers see the whole input ("all").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models.trace import LayerCall, LayerTrace


def output_size(
    size: int,
    kernel: int,
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int = 1,
    *,
    ceil_mode: bool = False,
    name: str = "layer",
) -> int:
    """Output length along one axis for ``kernel``, ``stride`` and ``padding``.

    ``padding`` is one number (both sides) or ``(before, after)``. A zero or negative
    stride, or a kernel larger than the padded input, is a :class:`CnnlabError`
    naming ``name``.
    """
    before, after = (padding, padding) if isinstance(padding, int) else padding
    if stride < 1:
        raise CnnlabError(f"{name}: stride {stride} must be a positive whole number")
    if kernel < 1:
        raise CnnlabError(f"{name}: kernel size {kernel} must be a positive whole number")
    if before < 0 or after < 0:
        raise CnnlabError(f"{name}: padding {padding} cannot be negative")
    span = dilation * (kernel - 1) + 1
    padded = size + before + after
    if span > padded:
        raise CnnlabError(
            f"{name}: kernel {kernel} (span {span}) is larger than the padded input {padded}"
        )
    steps = (padded - span) / stride
    return (math.ceil(steps) if ceil_mode else math.floor(steps)) + 1


@dataclass
class LayerRow:
    """One call of one layer in :func:`layer_table`."""

    name: str
    kind: str
    out_shape: tuple[int, ...]
    kernel: str = ""
    stride: str = ""
    padding: str = ""
    receptive_field: str = ""
    params: int = 0
    formula: str = ""

    @property
    def shape_text(self) -> str:
        """The output shape as the tutorials print it: ``H×W×C`` or a length."""
        return format_shape(self.out_shape)


@dataclass
class LayerTable:
    """Every layer call of a model on its input, with the totals."""

    model: str
    input_shape: tuple[int, ...]
    rows: list[LayerRow]

    @property
    def total_params(self) -> int:
        """Sum of the parameters of the rows (each module counted once)."""
        return sum(r.params for r in self.rows)

    def shape_path(self) -> str:
        """The shapes after each convolution, pooling and dense layer, joined by arrows.

        A ``1×1×C`` map is written ``C``, as LeNet-5's 120-unit convolution usually is.
        """

        def text(shape: tuple[int, ...]) -> str:
            return str(shape[0]) if len(shape) == 3 and shape[1:] == (1, 1) else format_shape(shape)

        shapes = [text(self.input_shape)]
        for r in self.rows:
            if r.kind in _SHAPE_KINDS and text(r.out_shape) != shapes[-1]:
                shapes.append(text(r.out_shape))
        return " → ".join(shapes)

    def format(self) -> str:
        """A plain-text table with a totals line and the shape path."""
        head = ("#", "layer", "kernel", "stride", "padding", "output", "RF", "parameters")
        body = [
            (
                str(i),
                f"{r.name} {r.kind}".strip(),
                r.kernel,
                r.stride,
                r.padding,
                r.shape_text,
                r.receptive_field,
                r.formula or ("0" if r.params == 0 else f"{r.params:,}"),
            )
            for i, r in enumerate(self.rows, 1)
        ]
        rows = [head, ("0", "input", "", "", "", format_shape(self.input_shape), "1×1", ""), *body]
        widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
        lines = []
        for n, row in enumerate(rows):
            cells = [cell.ljust(widths[c]) for c, cell in enumerate(row)]
            lines.append("  ".join(cells).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        formulas = [f"{r.params:,}" for r in self.rows if r.params]
        lines.append("")
        lines.append(f"shapes: {self.shape_path()}")
        lines.append(f"parameters: {' + '.join(formulas) or '0'} = {self.total_params:,}")
        return "\n".join(lines)


_SHAPE_KINDS = {
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "Flatten",
    "Linear",
}


def format_shape(shape: tuple[int, ...]) -> str:
    """``(C, H, W)`` as ``H×W×C``; any other shape joined by ``×``."""
    if len(shape) == 3:
        c, h, w = shape
        return f"{h}×{w}×{c}"
    return "×".join(str(s) for s in shape)


def _two(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _fmt_pair(p: tuple[int, int]) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]},{p[1]}"


def _conv_pads(module: nn.Module, k: tuple[int, int], d: tuple[int, int]) -> tuple[int, ...]:
    padding = module.padding  # type: ignore[attr-defined]
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        th, tw = d[0] * (k[0] - 1), d[1] * (k[1] - 1)  # torch's "same": extra at the end
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    ph, pw = _two(padding)
    return (ph, ph, pw, pw)


def _geometry(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """Kernel, stride, dilation (each rows, columns) and padding (top, bottom, left,
    right) of a convolution or pooling layer."""
    k = _two(module.kernel_size)  # type: ignore[attr-defined]
    stride = module.stride  # type: ignore[attr-defined]
    s = _two(stride if stride is not None else k)
    d = _two(getattr(module, "dilation", 1))
    if isinstance(module, nn.Conv2d):
        return k, s, d, _conv_pads(module, k, d)
    p = _two(module.padding)  # type: ignore[attr-defined]
    return k, s, d, (p[0], p[0], p[1], p[1])


def _pads_text(pads: tuple[int, ...]) -> str:
    t, b, left, r = pads
    if t == b and left == r:
        return _fmt_pair((t, left))
    return f"{t},{b},{left},{r}"


class _Rows:
    """Checks each layer's arguments before it runs, and turns layer calls into rows."""

    def __init__(self) -> None:
        self.rows: list[LayerRow] = []
        self.rf: dict[int, tuple[int, int]] = {}  # id(tensor) -> (receptive field, jump)
        self.last: tuple[int, int] = (1, 1)
        self.counted: set[int] = set()

    def check(self, name: str, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        x = inputs[0] if inputs else None
        if not isinstance(x, torch.Tensor):
            return
        label = f"layer {name or type(module).__name__} ({type(module).__name__})"
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            if x.ndim < 3:
                raise CnnlabError(f"{label}: needs an image input, got shape {tuple(x.shape)}")
            k, s, d, pads = _geometry(module)
            if isinstance(module, nn.Conv2d) and x.shape[-3] != module.in_channels:
                raise CnnlabError(
                    f"{label}: expects {module.in_channels} input channels, gets {x.shape[-3]}"
                )
            for axis, size in enumerate(x.shape[-2:]):
                output_size(
                    int(size),
                    k[axis],
                    s[axis],
                    (pads[2 * axis], pads[2 * axis + 1]),
                    d[axis],
                    name=label,
                )
        elif isinstance(module, nn.Linear) and x.shape[-1] != module.in_features:
            raise CnnlabError(
                f"{label}: expects {module.in_features} input features, gets {x.shape[-1]}"
            )

    def add(self, call: LayerCall) -> None:
        module, output, x = call.module, call.output, call.input
        if not isinstance(output, torch.Tensor):
            return
        rf, jump = self.rf.get(id(x), self.last) if x is not None else self.last
        row = LayerRow(
            name=call.name,
            kind=type(module).__name__,
            out_shape=tuple(int(s) for s in output.shape[1:]),
        )
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s, d, pads = _geometry(module)
            row.kernel = f"{k[0]}×{k[1]}"
            row.stride = _fmt_pair(s)
            row.padding = _pads_text(pads)
            if rf > 0:
                rf, jump = rf + (max(k) - 1) * max(d) * jump, jump * max(s)
        elif isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            row.kernel = "adaptive"
            if x is not None and output.ndim == 4 and output.shape[-2:] != x.shape[-2:]:
                rf = 0
        elif isinstance(module, (nn.Linear, nn.Flatten)):
            rf = 0
        row.receptive_field = "all" if rf == 0 else f"{rf}×{rf}"
        self._count(module, row)
        self.rf[id(output)] = (rf, jump)
        self.last = (rf, jump)
        self.rows.append(row)

    def _count(self, module: nn.Module, row: LayerRow) -> None:
        if id(module) in self.counted:
            return
        self.counted.add(id(module))
        n = sum(p.numel() for p in module.parameters(recurse=False))
        row.params = n
        if n == 0:
            return
        if isinstance(module, nn.Conv2d):
            kh, kw = _two(module.kernel_size)
            cin = module.in_channels // module.groups
            core = f"{kh}·{kw}·{cin}"
            row.formula = (
                f"({core}+1)·{module.out_channels} = {n:,}"
                if module.bias is not None
                else f"{core}·{module.out_channels} = {n:,}"
            )
        elif isinstance(module, nn.Linear):
            row.formula = (
                f"({module.in_features}+1)·{module.out_features} = {n:,}"
                if module.bias is not None
                else f"{module.in_features}·{module.out_features} = {n:,}"
            )
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            row.formula = f"2·{module.num_features} = {n:,}"
        else:
            row.formula = f"{n:,}"


def layer_table(
    model: nn.Module | str, input_size: tuple[int, int, int] | None = None, **model_args: Any
) -> LayerTable:
    """Trace ``model`` (a module or a registered model id) on a dummy input.

    ``input_size`` is ``(C, H, W)``; it defaults to the registered model's declared size.
    ``model_args`` go to the registered model's factory (e.g. ``num_classes=1000``).
    Inconsistent layer arguments raise a :class:`CnnlabError` naming the layer.
    """
    label = "model"
    if isinstance(model, str):
        from cnnlab.models import create_model, get_model_spec

        spec = get_model_spec(model)
        label = spec.name
        input_size = input_size or spec.input_size
        model = _build_cheaply(lambda: create_model(spec.name, **model_args))
    if input_size is None:
        raise CnnlabError("layer table: give the input size (C, H, W) for an unregistered model")
    rows = _Rows()
    trace = LayerTrace(model, before=rows.check)
    was_training = model.training
    model.eval()
    try:
        trace.run(torch.zeros((1, *input_size), device=_device_of(model)))
    except CnnlabError:
        raise
    except RuntimeError as exc:
        where = trace.calls[-1].name if trace.calls else "the first layer"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CnnlabError(f"{label}: fails after layer {where}: {first}") from None
    finally:
        model.train(was_training)
    for call in trace.calls:
        rows.add(call)
    return LayerTable(model=label, input_shape=tuple(input_size), rows=rows.rows)


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _build_cheaply(factory: Any) -> nn.Module:
    """Build on the meta device (shapes only, no memory) when the model allows it."""
    try:
        with torch.device("meta"):
            return factory()
    except (RuntimeError, NotImplementedError, TypeError):
        return factory()
