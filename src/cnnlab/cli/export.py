"""The ``export`` command: a run's model, preprocessing included, as ONNX or TorchScript."""

from __future__ import annotations

import argparse
import json

from cnnlab.cli.options import whole_number
from cnnlab.export import MIN_OPSET


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``export`` command."""
    p = sub.add_parser(
        "export",
        help="write a run's model as ONNX (or TorchScript), checked against PyTorch",
        description="Export a trained run with its preprocessing inside the graph: the file "
        "takes uint8 images N×C×H×W of the run's image shape (N×1×28×28 white ink on black "
        "for digits, N×3×H×W RGB for photo runs; 0-255, any batch size) and returns "
        "float32 logits N×classes. An ONNX file is checked with onnxruntime "
        "against the PyTorch model before it is written (needs: pip install "
        "'cnnlab[export]').",
    )
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument(
        "-o",
        "--out",
        metavar="FILE",
        help="output file (default RUN/model.onnx, or RUN/model.pt for torchscript)",
    )
    p.add_argument(
        "--format",
        choices=("onnx", "torchscript"),
        default="onnx",
        help="onnx (default) or torchscript",
    )
    p.add_argument(
        "--opset", type=whole_number(MIN_OPSET), default=18, help="ONNX opset (default 18)"
    )
    p.add_argument(
        "--no-check",
        action="store_true",
        help="skip running the file against the PyTorch model",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from cnnlab.export import export_run

    result = export_run(
        args.run, args.out, format=args.format, opset=args.opset, check=not args.no_check
    )
    if args.json:
        print(
            json.dumps(
                {
                    "file": str(result.path),
                    "format": result.format,
                    "opset": result.opset,
                    "bytes": result.bytes,
                    "checked_batches": list(result.checked_batches),
                    "input_shape": ["N", *result.image_shape],
                    "max_abs_diff": result.max_abs_diff,
                    "same_predictions": result.same_predictions,
                }
            )
        )
    else:
        print(result.describe())
    return 0
