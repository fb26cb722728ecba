"""Where the network looked: Grad-CAM on the last convolution and integrated gradients.

Both are written here with plain autograd rather than taken from Captum: each is a dozen
lines, the page needs them on every stroke (Captum's wrappers add hooks and checks per
call), and ``cnnlab serve`` then needs nothing beyond torch. The test suite checks both
against Captum 0.9 (``LayerGradCam`` and ``IntegratedGradients`` with the same
Gauss–Legendre steps) when it is installed, so the numbers are Captum's.

* Grad-CAM (Selvaraju et al., 2017): the last convolution's maps ``A_k``, weighted by the
  spatial mean of the target logit's gradient, summed, passed through ReLU, and
  upsampled bilinearly to the input's size.
* Integrated gradients (Sundararajan et al., 2017): ``(x − x₀) · ∫₀¹ ∂f(x₀ + α(x − x₀))/∂x
  dα`` with the black image as baseline ``x₀``, the integral taken at Gauss–Legendre
  points; summed over colour channels. Positive pixels pushed the target logit up.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["METHODS", "gradcam", "gradcam_layer", "integrated_gradients", "saliency_map"]

METHODS = ("gradcam", "ig")
#: Points of the integrated-gradients integral (one batch through the model).
IG_STEPS = 24


def gradcam_layer(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The convolution Grad-CAM reads: the last ``Conv2d`` defined with a kernel larger
    than 1×1 (a residual block's 1×1 shortcut projection is not its main path), else the
    last ``Conv2d``; None for a model without convolutions."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return None
    wide = [(n, m) for n, m in convs if max(m.kernel_size) > 1]
    return (wide or convs)[-1]


def gradcam(model: nn.Module, x: torch.Tensor, target: int, layer: nn.Module) -> torch.Tensor:
    """Grad-CAM of class ``target`` for one input ``x`` (1×C×H×W): H×W, non-negative."""
    kept: list[torch.Tensor] = []

    def hook(_m: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        # A clone, so that an in-place activation after the layer cannot change it.
        out = output.clone()
        kept.append(out)
        return out

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():  # only the input's gradient is taken
            logits = model(x.detach())
            (grad,) = torch.autograd.grad(logits[0, target], kept[0])
    finally:
        handle.remove()
    acts = kept[0].detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)
    return cam[0, 0].detach()


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    baseline: torch.Tensor,
    steps: int = IG_STEPS,
) -> torch.Tensor:
    """Integrated gradients of class ``target``'s logit for ``x`` (1×C×H×W) from
    ``baseline`` (same shape): C×H×W, signed."""
    points, weights = np.polynomial.legendre.leggauss(steps)
    alphas = torch.tensor(0.5 * (points + 1), dtype=x.dtype)
    scales = torch.tensor(0.5 * weights, dtype=x.dtype)
    x, baseline = x.detach().contiguous(), baseline.detach().contiguous()
    delta = x - baseline
    path = (baseline + alphas.view(-1, 1, 1, 1) * delta).requires_grad_(True)
    with torch.enable_grad():  # only the input's gradient is taken
        logits = model(path)
        (grads,) = torch.autograd.grad(logits[:, target].sum(), path)
    avg = (grads * scales.view(-1, 1, 1, 1)).sum(dim=0)
    return (delta[0] * avg).detach()


def saliency_map(
    method: str, model: nn.Module, x: torch.Tensor, target: int, baseline: torch.Tensor
) -> tuple[np.ndarray, dict[str, Any]]:
    """``method``'s map (H×W floats) for class ``target`` and what the page says of it;
    ValueError for an unknown method or a model Grad-CAM cannot read."""
    if method == "gradcam":
        found = gradcam_layer(model)
        if found is None:
            raise ValueError("Grad-CAM needs a convolution layer; this model has none")
        name, layer = found
        cam = gradcam(model, x, target, layer).float().cpu().numpy()
        return cam, {"method": method, "layer": name, "signed": False}
    if method == "ig":
        attr = integrated_gradients(model, x, target, baseline).float().sum(dim=0)
        return attr.cpu().numpy(), {
            "method": method,
            "steps": IG_STEPS,
            "baseline": "black image",
            "signed": True,
        }
    raise ValueError(f"saliency must be one of {', '.join(METHODS)}, not {method!r}")
