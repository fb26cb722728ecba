"""Device-resident batches: the whole dataset as one uint8 tensor, sliced per batch.

No DataLoader, no per-sample Python: each epoch draws one permutation of indices,
and batches are gathered, converted to float, normalised and brought to the model's
input size in a handful of tensor operations on the training device, many batches at
a time, so that a small network's step does not wait on a dozen tiny operations.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from cnnlab.data.mapped import MappedImages, gather_rows, is_mapped
from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from cnnlab.distributed import Shard


@dataclass(frozen=True)
class Preprocess:
    """How uint8 images become model input: scale to 0–1, normalise, fit to the input size.

    ``mean``/``std`` apply after scaling to 0–1 (the tutorials use mean 0, std 1).
    ``input_size`` is the model's (channels, height, width); ``fit`` is ``"pad"``
    (centre with a zero border) or ``"resize"`` (bilinear interpolation).
    """

    input_size: tuple[int, int, int] = (1, 28, 28)
    fit: str = "resize"
    mean: float | tuple[float, ...] = 0.0
    std: float | tuple[float, ...] = 1.0

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, list | tuple):
                if not value or not all(math.isfinite(float(v)) for v in value):
                    raise CnnlabError(f"{name} must be finite numbers, not {value!r}")
                object.__setattr__(self, name, tuple(float(v) for v in value))
        std = self.std if isinstance(self.std, tuple) else (self.std,)
        if min(std) <= 0:
            raise CnnlabError(f"std must be positive, not {self.std!r}")

    def __call__(
        self, images: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Turn a uint8 (N, C, H, W) batch into the float input the model expects.

        ``augment`` (e.g. an :class:`~cnnlab.data.augment.Augment`) changes the images
        after scaling to 0–1 and before normalisation, so empty borders stay black.
        """
        if images.dim() == 3:
            images = images.unsqueeze(1)
        x = images.float().div_(255.0)
        if augment is not None:
            x = augment(x)
        if self.mean != 0.0 or self.std != 1.0:
            x = x.sub_(_per_channel(self.mean, x)).div_(_per_channel(self.std, x))
        return fit_to_input(x, self.input_size, self.fit)

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly form for the run folder's config."""
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        for name in ("mean", "std"):
            if isinstance(d[name], tuple):
                d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Preprocess:
        """Inverse of :meth:`to_dict`."""
        size = tuple(int(v) for v in d["input_size"])  # type: ignore[union-attr]
        return cls(
            input_size=(size[0], size[1], size[2]),
            fit=str(d.get("fit", "resize")),
            mean=_number_or_numbers(d.get("mean", 0.0)),
            std=_number_or_numbers(d.get("std", 1.0)),
        )


def _number_or_numbers(value: object) -> float | tuple[float, ...]:
    if isinstance(value, list | tuple):
        return tuple(float(v) for v in value)
    return float(value)  # type: ignore[arg-type]


def _per_channel(value: float | tuple[float, ...], x: torch.Tensor) -> float | torch.Tensor:
    """A scalar, or one value per channel shaped to broadcast over an (N, C, H, W) batch."""
    if not isinstance(value, tuple):
        return value
    if len(value) != x.shape[1]:
        raise CnnlabError(f"{len(value)} per-channel values for {x.shape[1]}-channel images")
    return torch.tensor(value, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)


def channel_statistics(
    images: torch.Tensor, chunk: int | None = None
) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and standard deviation of uint8 (N, C, H, W) images, scaled to 0–1:
    ``((mean_c, ...), (std_c, ...))``. Read ``chunk`` images at a time (default: about
    8 million values, 64 MB as float64), summed in float64, so neither a memory-mapped
    data set nor a float copy of it is ever held whole."""
    if images.dim() != 4 or len(images) == 0:
        raise CnnlabError("channel statistics need a non-empty (N, C, H, W) batch")
    channels = images.shape[1]
    if chunk is None:
        chunk = max(1, (1 << 23) // math.prod(images.shape[1:]))
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = torch.as_tensor(images[start : start + chunk]).to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    mean, std = mean / 255.0, (std / 255.0).clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def fit_to_input(x: torch.Tensor, input_size: tuple[int, int, int], fit: str) -> torch.Tensor:
    """Bring a float (N, C, H, W) batch to ``input_size``: pad or resize, repeat channels."""
    channels, height, width = input_size
    h, w = x.shape[-2:]
    if (h, w) != (height, width):
        if fit == "pad" and height >= h and width >= w:
            top, left = (height - h) // 2, (width - w) // 2
            x = F.pad(x, (left, width - w - left, top, height - h - top))
        else:
            x = F.interpolate(
                x,
                size=(height, width),
                mode="bilinear",
                align_corners=False,
                antialias=height < h or width < w,
            )
    c = x.shape[1]
    if c != channels:
        if c == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1:
            x = x.mean(dim=1, keepdim=True)
        else:
            raise CnnlabError(f"cannot feed {c}-channel images to a {channels}-channel model")
    return x.contiguous()


class TensorBatches:
    """Iterate over (input, label) batches of tensors kept whole on one device.

    ``images`` is uint8 (N, C, H, W), ``labels`` int64 (N,). With ``shuffle``, each
    epoch uses a permutation drawn from a generator seeded by ``(seed, epoch)``, so a
    resumed run sees exactly the batches an uninterrupted one would. ``images`` may
    also be :class:`~cnnlab.data.mapped.MappedImages` (a data set larger than memory):
    they stay in their file, and each batch's rows are read from it (in file order, then
    put in the permutation's order: the same batches as from a tensor) and moved to the
    device as they are needed. ``augment`` is
    applied to each batch after scaling (see :meth:`Preprocess.__call__`);
    ``channels_last`` hands the model NHWC-strided batches, faster for convolutions.

    With ``world_size`` > 1 (data-parallel training) this rank yields only its share of
    each global batch of ``batch_size`` (:func:`cnnlab.distributed.shard_epoch`), and
    :attr:`weights` holds each step's loss weight once an epoch's iteration has begun.
    """

    def __init__(
        self,
        images: torch.Tensor | MappedImages,
        labels: torch.Tensor,
        batch_size: int,
        preprocess: Preprocess,
        *,
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise CnnlabError(f"batch size must be at least 1, not {batch_size}")
        if len(images) != len(labels):
            raise CnnlabError(f"{len(images)} images but {len(labels)} labels")
        self.device = torch.device(device)
        self.images = images if is_mapped(images) else images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.preprocess = preprocess
        self.shuffle = shuffle
        self.seed = seed
        self.augment = augment
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        #: The loss weight of each step of the epoch being iterated (all 1 for one process).
        self.weights: list[float] = []
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    @property
    def num_samples(self) -> int:
        """Number of images."""
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` for the next iteration."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        mapped = is_mapped(self.images)
        order = None
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=gen)
        if self.world_size > 1:
            yield from self._shard(torch.arange(n) if order is None else order)
            return
        self.weights = [1.0] * len(self)
        if order is not None and not mapped:  # a file is indexed on the host
            order = order.to(self.device)
        # Without augmentation, whole runs of batches are prepared at once (about
        # CHUNK_BYTES of model input each): the same values, a fraction of the calls.
        # Augmentation draws its randomness per batch, so it keeps batch-sized calls.
        sample = max(math.prod(self.images.shape[1:]), math.prod(self.preprocess.input_size), 1)
        per_batch = self.batch_size * sample * 4
        span = self.batch_size
        if self.augment is None:
            span *= max(1, CHUNK_BYTES // per_batch)
        for chunk in range(0, n, span):
            if order is None:
                xs = self.images[chunk : chunk + span]
                ys = self.labels[chunk : chunk + span]
            elif mapped:
                idx = order[chunk : chunk + span]
                xs, ys = gather_rows(self.images, idx), self.labels[idx.to(self.device)]
            else:
                idx = order[chunk : chunk + span]
                xs, ys = self.images[idx], self.labels[idx]
            if mapped:
                xs = xs.to(self.device)
            if self.augment is None:
                x = self._prepare(xs)
                for start in range(0, len(xs), self.batch_size):
                    yield x[start : start + self.batch_size], ys[start : start + self.batch_size]
            else:
                yield self._prepare(xs), ys

    def _shard(self, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of the epoch whose rows come in ``order``."""
        from cnnlab.distributed import shard_epoch

        shard = shard_epoch(order, self.batch_size, self.rank, self.world_size)
        self.weights = shard.weights
        _record_rows(shard, self.rank, self.epoch)
        mapped = is_mapped(self.images)
        start = 0
        for size in shard.sizes:
            idx = shard.rows[start : start + size]
            start += size
            if mapped:
                xs = gather_rows(self.images, idx).to(self.device)
            else:
                xs = self.images[idx.to(self.device)]
            yield self._prepare(xs), self.labels[idx.to(self.device)]

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images, self.augment)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _record_rows(shard: Shard, rank: int, epoch: int) -> None:
    """With ``CNNLAB_RECORD_ROWS=DIR``, write the rows this rank trains on in ``epoch``
    (not the weight-0 stand-ins) to ``DIR/rank<R>-epoch<E>.txt``: a check that the
    ranks' shards are disjoint and cover the data (the tests read it); nothing is
    written without the variable."""
    folder = os.environ.get("CNNLAB_RECORD_ROWS")
    if not folder:
        return
    rows = [
        part.tolist()
        for part, weight in zip(shard.rows.split(shard.sizes), shard.weights, strict=True)
        if weight
    ]
    path = Path(folder) / f"rank{rank}-epoch{epoch}.txt"
    path.write_text(" ".join(str(v) for part in rows for v in part) + "\n")


#: How much model input (float32 bytes) :class:`TensorBatches` prepares in one go.
CHUNK_BYTES = 1 << 20
