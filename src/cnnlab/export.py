"""Export a run's model, preprocessing included, to ONNX or TorchScript.

The exported graph takes what the run's data holds and what ``cnnlab predict``
prepares: **uint8 images N×C×H×W** of the run's image shape
(:attr:`~cnnlab.runs.Run.preparation`), 0–255: N×1×28×28 white ink on black for
MNIST-style digits, N×3×H×W RGB for photo runs (CIFAR-10 N×3×32×32; a folder's images
at their ``--image-size``). Inside the graph they are scaled to 0–1, normalised with the
run's mean and std and fitted to the model's input size (zero-padded or resized,
channels repeated) exactly as the run's :class:`~cnnlab.data.loader.Preprocess` does,
so a consumer never has to re-implement the preprocessing; decoding a file and bringing
it to H×W (``cnnlab predict``'s preparation) stays outside. The single output, ``logits``, is float32 N×classes; a softmax
over axis 1 gives the probabilities ``cnnlab predict`` shows. The batch axis is
dynamic.

ONNX files are written by ``torch.onnx.export`` with the ``torch.export``-based
exporter (it needs ``onnx`` and ``onnxscript``) and checked with ``onnxruntime``
against the eager model before they are moved into place; the class names, model
id, preprocessing and image preparation are stored in the file's metadata. TorchScript files are traced
with ``torch.jit.trace`` (deprecated by PyTorch, but still loadable with nothing but
torch). Both are written atomically.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab import atomic
from cnnlab.data.loader import Preprocess
from cnnlab.errors import CnnlabError

FORMATS = ("onnx", "torchscript")
#: The shape of one input image of a digit run (grey 28×28, as MNIST stores it);
#: other runs take their own :attr:`~cnnlab.runs.Run.preparation` shape.
IMAGE_SHAPE = (1, 28, 28)
DEFAULT_OPSET = 18
MIN_OPSET = 17
#: Batch sizes the exported file is checked with after writing.
CHECK_BATCHES = (1, 7)
INPUT_NAME, OUTPUT_NAME = "images", "logits"


class ExportedModel(nn.Module):
    """The run's model with its preprocessing in front: uint8 images in, logits out."""

    def __init__(self, model: nn.Module, preprocess: Preprocess) -> None:
        super().__init__()
        self.model = model
        self.preprocess = preprocess

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(images))


@dataclass
class ExportResult:
    """What :func:`export_run` wrote and how well the file matched the eager model."""

    path: Path
    format: str
    bytes: int
    max_abs_diff: float
    same_predictions: bool
    checked_batches: tuple[int, ...]
    opset: int | None = None
    #: One input image's (channels, height, width).
    image_shape: tuple[int, int, int] = IMAGE_SHAPE

    def describe(self) -> str:
        """Two lines for the command line."""
        what = f"ONNX opset {self.opset}" if self.format == "onnx" else "TorchScript"
        runtime = "onnxruntime" if self.format == "onnx" else "the TorchScript file"
        wrote = (
            f"wrote {self.path} ({what}, {self.bytes / 1e6:.2f} MB): input {INPUT_NAME} uint8 "
            f"N×{'×'.join(map(str, self.image_shape))}, output {OUTPUT_NAME} float32 N×classes"
        )
        if not self.checked_batches:
            return wrote + "\nnot checked against PyTorch"
        batches = " and ".join(str(b) for b in self.checked_batches)
        return (
            f"{wrote}\nchecked {runtime} against PyTorch at batch {batches}: max abs diff "
            f"{self.max_abs_diff:.2e} in the logits, "
            f"{'same' if self.same_predictions else 'DIFFERENT'} predicted classes"
        )


def require(*modules: str) -> None:
    """Import each module or fail with one line saying what to install."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise CnnlabError(
            f"{', '.join(missing)} not installed; ONNX export needs onnx, onnxscript and "
            "onnxruntime: pip install 'cnnlab[export]'"
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress lines, deprecation and tracer warnings."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def check_inputs(
    batch_sizes: Sequence[int] = CHECK_BATCHES,
    seed: int = 0,
    shape: tuple[int, int, int] = IMAGE_SHAPE,
) -> list[torch.Tensor]:
    """Reproducible uint8 test batches of ``shape`` images: random noise, plus a blank
    and a full-white image."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in batch_sizes:
        x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=gen)
        if n > 2:
            x[0].zero_()
            x[1].fill_(255)
        out.append(x)
    return out


def _compare(
    reference: nn.Module, run_file: Any, inputs: Sequence[torch.Tensor]
) -> tuple[float, bool]:
    """Largest |difference| of the logits and whether every argmax agrees."""
    worst, same = 0.0, True
    with torch.inference_mode():
        for x in inputs:
            expected = reference(x).float()
            got = torch.as_tensor(run_file(x)).float()
            if got.shape != expected.shape:
                raise CnnlabError(
                    f"the exported model gave shape {tuple(got.shape)} for batch {len(x)}, "
                    f"expected {tuple(expected.shape)}"
                )
            worst = max(worst, float((got - expected).abs().max()))
            same = same and bool((got.argmax(1) == expected.argmax(1)).all())
    return worst, same


def input_description(run: Any) -> str:
    """What the exported file's input holds, in one line."""
    shape = "×".join(map(str, run.preparation.shape))
    if run.preparation.digits:
        return f"{INPUT_NAME}: uint8 N×{shape}, white ink on black, 0-255"
    colour = "RGB" if run.preparation.shape[0] == 3 else "grey"
    return (
        f"{INPUT_NAME}: uint8 N×{shape}, {colour} 0-255, each picture decoded and "
        f"resized ({run.preparation.resize}) like the run's images"
    )


def _onnx_metadata(run: Any) -> dict[str, str]:
    from cnnlab import __version__

    return {
        "cnnlab_version": __version__,
        "model": run.config.model,
        "model_args": json.dumps(run.config.model_args),
        "dataset": run.dataset,
        "classes": json.dumps(list(run.classes)),
        "preprocess": json.dumps(run.preprocess.to_dict()),
        "images": json.dumps(run.preparation.to_dict()),
        "input": input_description(run),
        "output": f"{OUTPUT_NAME}: float32 N×{len(run.classes)}; softmax gives probabilities",
        "test_accuracy": str(run.metrics.get("test_accuracy", "")),
    }


def write_onnx(
    module: nn.Module,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    metadata: dict[str, str] | None = None,
    shape: tuple[int, int, int] = IMAGE_SHAPE,
) -> None:
    """Export ``module`` (uint8 images N×C×H×W of ``shape`` in, one output) to an ONNX
    file at ``path``.

    The batch axis is dynamic; ``metadata`` goes into the file's metadata_props. The
    file is written as is (not atomically) and checked with ``onnx.checker``.
    """
    require("onnx", "onnxscript")
    import onnx

    example = check_inputs((2,), shape=shape)[0]
    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet():
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"images": {0: batch}},
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; keep the first line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CnnlabError(f"torch.onnx.export failed: {first}") from None
    if program is None:  # pragma: no cover - only the legacy exporter returns None
        raise CnnlabError("torch.onnx.export returned no program")
    proto = program.model_proto
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    dims = "×".join(map(str, shape))
    proto.doc_string = f"cnnlab model with its preprocessing: uint8 images N×{dims} in, logits out"
    onnx.save_model(proto, str(path))
    onnx.checker.check_model(str(path))


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for ``path`` (``threads``: intra-op threads, else ORT's)."""
    require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_runner(path: Path) -> Any:
    session = onnx_session(path)

    def run(x: torch.Tensor) -> Any:
        return session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]

    return run


def _export_torchscript(module: ExportedModel, tmp: Path, shape: tuple[int, int, int]) -> Any:
    example = check_inputs((2,), shape=shape)[0]
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(module, (example,))
        torch.jit.save(traced, str(tmp))
        loaded = torch.jit.load(str(tmp), map_location="cpu")
    return loaded


def export_run(
    run_path: str | Path,
    out: str | Path | None = None,
    *,
    format: str = "onnx",
    opset: int = DEFAULT_OPSET,
    check: bool = True,
) -> ExportResult:
    """Export the run folder's model (with its preprocessing) to ``out``.

    ``format`` is ``"onnx"`` (default) or ``"torchscript"``; ``out`` defaults to
    ``RUN/model.onnx`` or ``RUN/model.pt``. With ``check`` the written file is run on
    a few batches (sizes :data:`CHECK_BATCHES`) and compared with the eager model
    before it replaces ``out``; a mismatch is a :class:`CnnlabError` and leaves no file.
    """
    from cnnlab.runs import load_run

    if format not in FORMATS:
        raise CnnlabError(f"unknown export format {format!r} (use {' or '.join(FORMATS)})")
    if format == "onnx":
        if opset < MIN_OPSET:
            raise CnnlabError(f"opset must be at least {MIN_OPSET}, not {opset}")
        require("onnx", "onnxscript", *(["onnxruntime"] if check else []))
    run = load_run(run_path, device="cpu")
    module = ExportedModel(run.model, run.preprocess).eval()
    if out is None:
        out = run.path / ("model.onnx" if format == "onnx" else "model.pt")
    out = Path(out)
    if out.is_dir():
        raise CnnlabError(f"{out} is a folder; give a file name, e.g. {out / 'model.onnx'}")
    shape = run.preparation.shape
    inputs = check_inputs(shape=shape)
    diff, same = 0.0, True

    def write(tmp: Path) -> None:
        nonlocal diff, same
        if format == "onnx":
            write_onnx(module, tmp, opset, _onnx_metadata(run), shape)
            runner = _onnx_runner(tmp) if check else None
        else:
            runner = _export_torchscript(module, tmp, shape)
        if check:
            diff, same = _compare(module, runner, inputs)
            if not same or diff > 1e-3:
                raise CnnlabError(
                    f"the exported model does not match PyTorch (max abs diff {diff:.2e}, "
                    f"{'same' if same else 'different'} predictions); nothing written"
                )

    atomic.write_with(out, write)
    return ExportResult(
        path=out,
        format=format,
        bytes=out.stat().st_size,
        max_abs_diff=diff,
        same_predictions=same,
        checked_batches=CHECK_BATCHES if check else (),
        opset=opset if format == "onnx" else None,
        image_shape=shape,
    )
