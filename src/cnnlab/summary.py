"""Model summaries: layers with input and output shapes, parameters, multiply-adds, sizes.

The table is torchinfo's, which reports what the tutorials' ``model.summary()`` and
``paddle.summary`` show, plus multiply-adds: per-layer input and output shapes,
parameter counts, totals, and the input, forward/backward, parameter and total
sizes in MB.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnlab.models import get_model_spec


def summary(
    model: nn.Module | str,
    input_size: tuple[int, ...] | None = None,
    batch_size: int = 1,
    depth: int = 3,
    **model_args: Any,
) -> str:
    """The summary table of ``model`` (a module, or a registered model id) as text.

    ``input_size`` is (channels, height, width); for a registered id it defaults to
    the model's declared input.
    """
    import torchinfo

    if isinstance(model, str):
        spec = get_model_spec(model)
        input_size = input_size or spec.input_size
        model = spec.create(**model_args)
    if input_size is None:
        input_size = (1, 28, 28)
    stats = torchinfo.summary(
        model,
        input_size=(batch_size, *input_size),
        col_names=("input_size", "output_size", "num_params", "mult_adds"),
        depth=depth,
        device=torch.device("cpu"),
        verbose=0,
        row_settings=("var_names",),
    )
    text = str(stats)
    # torchinfo names its unit enum in the totals line ("Units.MEGABYTES"); say "M".
    for unit, short in (
        ("MEGABYTES", "M"),
        ("GIGABYTES", "G"),
        ("KILOBYTES", "K"),
        ("TERABYTES", "T"),
        ("NONE", ""),
    ):
        text = text.replace(f"(Units.{unit})", f"({short})" if short else "")
    return text
