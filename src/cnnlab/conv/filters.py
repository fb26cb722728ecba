"""The classical image filters the tutorials teach: named kernels and how to show their results.

Every kernel is a small matrix laid on the image without flipping (cross-correlation);
``y`` grows downwards, ``x`` to the right.

=====================  ==========================================  ====================================
name (aliases)         matrix                                      what it shows
=====================  ==========================================  ====================================
identity               ``[[0,0,0],[0,1,0],[0,0,0]]``               the image unchanged
mean (box, blur)       ``ones(n, n) / n²``, odd ``n`` (default 3)  a blur: each pixel becomes the
                                                                   average of its neighbourhood
gaussian               ``exp(-(x²+y²)/2σ²)``, summing to 1         a softer blur that keeps contours
                       (default 5×5, σ=1.1)                        better than the mean
prewitt-vertical       ``[[-1,0,1],[-1,0,1],[-1,0,1]]``            vertical edges (brightness rising
(prewitt-x)                                                        to the right is positive)
prewitt-horizontal     ``[[-1,-1,-1],[0,0,0],[1,1,1]]``            horizontal edges (rising downwards)
(prewitt-y)
prewitt-45             ``[[-1,-1,0],[-1,0,1],[0,1,1]]``            edges running at 45°, from lower
                                                                   left to upper right (``/``)
prewitt-135            ``[[0,1,1],[-1,0,1],[-1,-1,0]]``            edges running at 135° (``\\``)
sobel-x                ``[[-1,0,1],[-2,0,2],[-1,0,1]]``            vertical edges; Prewitt with double
(sobel-vertical)                                                   weight on the straight neighbours
sobel-y                ``[[-1,-2,-1],[0,0,0],[1,2,1]]``            horizontal edges
(sobel-horizontal)
sobel (sobel-magnitude) ``sqrt(sobel-x² + sobel-y²)``              edges of every direction, strength
                                                                   only
laplacian-4            ``[[0,1,0],[1,-4,1],[0,1,0]]``              second derivative: thin outlines on
(laplacian)                                                        both sides of an edge
laplacian-8            ``[[1,1,1],[1,-8,1],[1,1,1]]``              the same with the diagonals
log                    Laplacian of a Gaussian (default 9×9,       edges at one scale, noise
                       σ=1.4), shifted to sum to 0                 suppressed first
sharpen                ``[[0,-1,0],[-1,5,-1],[0,-1,0]]``           the image plus its negative
                                                                   Laplacian: crisper detail
emboss                 ``[[-2,-1,0],[-1,1,1],[0,1,2]]``            a relief lit from the upper left
=====================  ==========================================  ====================================

How a result is shown (``Kernel.display``): ``"image"`` kernels (identity, blurs,
sharpen, emboss) keep the image's range and colours and are clipped to [0, 1];
``"signed"`` kernels (Prewitt, Sobel x/y, Laplacians, LoG) give positive and negative
responses, shown on a diverging colour map (red positive, blue negative, white zero) and,
for RGB images, computed on the grey level; ``"magnitude"`` (Sobel) is non-negative and
shown in grey.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cnnlab.conv.ops import Padding, conv2d, to_tensor
from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class Kernel:
    """A named kernel: its matrix, what it shows and how its result is displayed.

    ``parts`` is set for a combination such as the Sobel gradient magnitude, whose result
    is ``sqrt(sum(conv(image, part)²))``; ``matrix`` is then the first part.
    """

    name: str
    matrix: np.ndarray
    description: str
    display: str = "image"
    parts: tuple[np.ndarray, ...] = field(default_factory=tuple)

    @property
    def size(self) -> tuple[int, int]:
        """The kernel's height and width."""
        return (int(self.matrix.shape[0]), int(self.matrix.shape[1]))

    def apply(
        self,
        image: Any,
        *,
        stride: int | tuple[int, int] = 1,
        padding: Padding = "same",
        mode: str = "reflect",
    ) -> torch.Tensor:
        """Filter every channel of ``image`` with this kernel (see :func:`apply_kernel`)."""
        return apply_kernel(image, self, stride=stride, padding=padding, mode=mode)

    def matrix_text(self, decimals: int = 3) -> str:
        """The matrix as rows of numbers, for printing."""
        rows = []
        for row in self.matrix:
            cells = [_num(v, decimals) for v in row]
            rows.append("[" + ", ".join(cells) + "]")
        return "[" + ",\n ".join(rows) + "]"


def _num(v: float, decimals: int) -> str:
    return str(int(round(v))) if float(v).is_integer() else f"{v:.{decimals}f}"


def apply_kernel(
    image: Any,
    kernel: Kernel | str,
    *,
    stride: int | tuple[int, int] = 1,
    padding: Padding = "same",
    mode: str = "reflect",
) -> torch.Tensor:
    """Filter each channel of ``image`` (``H×W``, ``C×H×W`` or ``N×C×H×W``) with ``kernel``.

    Combined kernels (Sobel magnitude) take the root of the summed squared responses.
    The defaults keep the size and mirror the border so edges of the frame do not show
    up as false edges.
    """
    k = get_kernel(kernel) if isinstance(kernel, str) else kernel
    parts = k.parts or (k.matrix,)
    outs = [
        conv2d(image, torch.from_numpy(p), stride=stride, padding=padding, mode=mode, name=k.name)
        for p in parts
    ]
    if len(outs) == 1:
        return outs[0]
    return torch.sqrt(sum(o * o for o in outs))


def _odd(size: int, name: str) -> int:
    if size < 1 or size % 2 == 0:
        raise CnnlabError(f"kernel {name}: size {size} must be odd (it needs a centre pixel)")
    return size


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    return np.meshgrid(r, r, indexing="ij")


def _blur_size(size: int | None, sigma: float | None, name: str) -> int:
    """The odd side of a Gaussian-shaped kernel: ``size``, else ``2·ceil(3σ)+1``."""
    if sigma is not None and sigma <= 0:
        raise CnnlabError(f"kernel {name}: sigma {sigma} must be positive")
    if size is None:
        size = 2 * math.ceil(3 * float(sigma)) + 1  # type: ignore[arg-type]
    return _odd(int(size), name)


def gaussian_matrix(size: int | None = None, sigma: float | None = None) -> np.ndarray:
    """A normalised 2-D Gaussian kernel; a missing size or sigma is derived from the other.

    ``size`` defaults to ``2·ceil(3σ)+1``; ``sigma`` to OpenCV's rule
    ``0.3·((size-1)/2 - 1) + 0.8``. With neither: 5×5, σ = 1.1.
    """
    if size is None and sigma is None:
        size = 5
    size = _blur_size(size, sigma, "gaussian")
    if sigma is None:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    yy, xx = _grid(size)
    g = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def log_matrix(size: int | None = None, sigma: float | None = None) -> np.ndarray:
    """Laplacian of Gaussian, negative at the centre, shifted so its entries sum to 0.

    Defaults: 9×9 and σ = 1.4; a missing size is ``2·ceil(3σ)+1``, a missing sigma
    ``(size-1)/6``.
    """
    if size is None and sigma is None:
        size, sigma = 9, 1.4
    size = _blur_size(size, sigma, "log")
    if sigma is None:
        sigma = max((size - 1) / 6, 0.5)
    yy, xx = _grid(size)
    r2 = (xx**2 + yy**2) / (2 * sigma**2)
    m = -(1.0 / (math.pi * sigma**4)) * (1 - r2) * np.exp(-r2)
    m = m - m.mean()
    return m.astype(np.float32)


def _m(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


PREWITT_X = _m([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]])
SOBEL_X = _m([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])

_Factory = Callable[[int | None, float | None], Kernel]


def _fixed(name: str, matrix: np.ndarray, description: str, display: str) -> _Factory:
    def make(size: int | None, sigma: float | None) -> Kernel:
        if size is not None and size != matrix.shape[0]:
            raise CnnlabError(f"kernel {name}: is {matrix.shape[0]}×{matrix.shape[1]} only")
        if sigma is not None:
            raise CnnlabError(f"kernel {name}: takes no sigma")
        return Kernel(name, matrix.copy(), description, display)

    return make


def _mean(size: int | None, sigma: float | None) -> Kernel:
    if sigma is not None:
        raise CnnlabError("kernel mean: takes no sigma (did you mean gaussian?)")
    n = _odd(3 if size is None else int(size), "mean")
    return Kernel(
        f"mean {n}×{n}" if n != 3 else "mean",
        np.full((n, n), 1.0 / (n * n), dtype=np.float32),
        "box blur: each pixel becomes the average of its neighbourhood",
    )


def _gaussian(size: int | None, sigma: float | None) -> Kernel:
    m = gaussian_matrix(size, sigma)
    s = sigma if sigma is not None else 0.3 * ((m.shape[0] - 1) * 0.5 - 1) + 0.8
    return Kernel(
        f"gaussian {m.shape[0]}×{m.shape[0]} σ={s:g}",
        m,
        "Gaussian blur: a weighted average that keeps contours better than the mean",
    )


def _log(size: int | None, sigma: float | None) -> Kernel:
    m = log_matrix(size, sigma)
    s = sigma if sigma is not None else (1.4 if size is None else max((m.shape[0] - 1) / 6, 0.5))
    return Kernel(
        f"log {m.shape[0]}×{m.shape[0]} σ={s:g}",
        m,
        "Laplacian of Gaussian: smooths away noise, then marks edges as zero crossings",
        "signed",
    )


def _sobel(size: int | None, sigma: float | None) -> Kernel:
    if size not in (None, 3) or sigma is not None:
        raise CnnlabError("kernel sobel: is 3×3 only and takes no sigma")
    return Kernel(
        "sobel",
        SOBEL_X.copy(),
        "gradient magnitude sqrt(sobel-x² + sobel-y²): edges of every direction",
        "magnitude",
        parts=(SOBEL_X.copy(), SOBEL_X.T.copy()),
    )


_FACTORIES: dict[str, _Factory] = {
    "identity": _fixed(
        "identity", _m([[0, 0, 0], [0, 1, 0], [0, 0, 0]]), "the image unchanged", "image"
    ),
    "mean": _mean,
    "gaussian": _gaussian,
    "prewitt-vertical": _fixed(
        "prewitt-vertical", PREWITT_X, "vertical edges (left-right brightness change)", "signed"
    ),
    "prewitt-horizontal": _fixed(
        "prewitt-horizontal",
        PREWITT_X.T.copy(),
        "horizontal edges (top-bottom brightness change)",
        "signed",
    ),
    "prewitt-45": _fixed(
        "prewitt-45",
        _m([[-1, -1, 0], [-1, 0, 1], [0, 1, 1]]),
        "edges running at 45° (lower left to upper right)",
        "signed",
    ),
    "prewitt-135": _fixed(
        "prewitt-135",
        _m([[0, 1, 1], [-1, 0, 1], [-1, -1, 0]]),
        "edges running at 135° (upper left to lower right)",
        "signed",
    ),
    "sobel-x": _fixed(
        "sobel-x", SOBEL_X, "vertical edges, straight neighbours weighted double", "signed"
    ),
    "sobel-y": _fixed(
        "sobel-y",
        SOBEL_X.T.copy(),
        "horizontal edges, straight neighbours weighted double",
        "signed",
    ),
    "sobel": _sobel,
    "laplacian-4": _fixed(
        "laplacian-4",
        _m([[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
        "second derivative (4 neighbours): outlines on both sides of every edge",
        "signed",
    ),
    "laplacian-8": _fixed(
        "laplacian-8",
        _m([[1, 1, 1], [1, -8, 1], [1, 1, 1]]),
        "second derivative (8 neighbours, diagonals included)",
        "signed",
    ),
    "log": _log,
    "sharpen": _fixed(
        "sharpen",
        _m([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
        "the image minus its Laplacian: crisper detail",
        "image",
    ),
    "emboss": _fixed(
        "emboss",
        _m([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]),
        "relief lit from the upper left",
        "image",
    ),
}

ALIASES: dict[str, str] = {
    "box": "mean",
    "blur": "mean",
    "average": "mean",
    "gauss": "gaussian",
    "prewitt-x": "prewitt-vertical",
    "prewitt-y": "prewitt-horizontal",
    "sobel-vertical": "sobel-x",
    "sobel-horizontal": "sobel-y",
    "sobel-magnitude": "sobel",
    "laplacian": "laplacian-4",
    "laplacian-of-gaussian": "log",
}


def kernel_names() -> list[str]:
    """The canonical names of the kernel library, in teaching order."""
    return list(_FACTORIES)


def get_kernel(name: str, *, size: int | None = None, sigma: float | None = None) -> Kernel:
    """The named kernel; ``size`` (odd) and ``sigma`` apply to mean, gaussian and log.

    A size may also be written in the name: ``mean-5``, ``gaussian-7``. An unknown name is
    a :class:`CnnlabError` listing the known ones.
    """
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    m = re.fullmatch(r"([a-z-]+?)-?(\d+)", key)
    if m and m.group(1) in ("mean", "box", "blur", "gaussian", "gauss", "log") and size is None:
        key, size = m.group(1), int(m.group(2))
    key = ALIASES.get(key, key)
    factory = _FACTORIES.get(key)
    if factory is None:
        raise CnnlabError(
            f"unknown kernel {name!r}; known kernels: {', '.join(kernel_names())} "
            "(or a matrix such as '1,0,-1;2,0,-2;1,0,-1')"
        )
    return factory(size, sigma)


def parse_kernel(spec: str, *, size: int | None = None, sigma: float | None = None) -> Kernel:
    """A kernel from a name (see :func:`get_kernel`) or a matrix ``'a,b,c;d,e,f;...'``.

    Matrix rows are separated by ``;`` and entries by ``,`` or spaces; any rectangular
    shape is accepted, even sizes included.
    """
    text = spec.strip()
    if not re.search(r"[;,]|^[-+\d. ]+$", text) or re.search(r"[a-df-z]", text, re.I):
        return get_kernel(text, size=size, sigma=sigma)
    try:
        rows = [[float(v) for v in re.split(r"[,\s]+", r.strip()) if v] for r in text.split(";")]
    except ValueError:
        raise CnnlabError(f"kernel {spec!r}: entries must be numbers") from None
    rows = [r for r in rows if r]
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        raise CnnlabError(f"kernel {spec!r}: every row needs the same number of entries")
    matrix = np.asarray(rows, dtype=np.float32)
    signed = bool(abs(float(matrix.sum())) < 1e-6 and np.any(matrix < 0))
    return Kernel(
        "custom",
        matrix,
        "a kernel given as a matrix",
        "signed" if signed else "image",
    )


def to_display(response: Any, kernel: Kernel) -> tuple[np.ndarray, dict[str, Any]]:
    """Turn a filtered ``C×H×W`` (or ``H×W``) response into an array ready for ``imshow``.

    Returns the array (``H×W`` or ``H×W×3``) and the ``imshow`` keyword arguments. Signed
    responses of an RGB image are averaged over the channels (the response of the grey
    image); the colour range is symmetric and set by the 98th percentile so a few
    extreme pixels do not wash the picture out.
    """
    t, _ = to_tensor(response, name="response")
    arr = t[0].numpy()
    if kernel.display == "image":
        arr = np.clip(arr, 0.0, 1.0)
        if arr.shape[0] == 1:
            return arr[0], {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
        return np.moveaxis(arr[:3], 0, -1), {}
    grey = arr.mean(axis=0) if kernel.display == "signed" else np.sqrt((arr**2).mean(axis=0))
    scale = float(np.percentile(np.abs(grey), 98.0)) or float(np.abs(grey).max()) or 1.0
    if kernel.display == "signed":
        return grey, {"cmap": "RdBu_r", "vmin": -scale, "vmax": scale}
    return grey, {"cmap": "gray", "vmin": 0.0, "vmax": scale}


def display_rgb(response: Any, kernel: Kernel) -> np.ndarray:
    """The displayed picture of a response as an ``H×W×3`` uint8 array (for saving)."""
    import matplotlib

    arr, kw = to_display(response, kernel)
    if arr.ndim == 3:
        return (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    norm = (arr - kw["vmin"]) / max(kw["vmax"] - kw["vmin"], 1e-12)
    rgba = matplotlib.colormaps[kw["cmap"]](np.clip(norm, 0, 1), bytes=True)
    return np.ascontiguousarray(rgba[..., :3])
