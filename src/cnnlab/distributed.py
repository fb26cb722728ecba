"""Data-parallel training on PyTorch's own engine: one process per device, started by
``torchrun`` (or ``cnnlab train --nproc N``), gradients averaged by
``DistributedDataParallel``, gloo on CPUs and NCCL on CUDA GPUs.

What each piece does, and why:

- :func:`start` joins the process group that ``torchrun``'s environment describes
  (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...) with a timeout on every
  collective, so a peer that died ends the job instead of hanging it.
- :func:`shard_epoch` splits each global batch of an epoch's permutation among the ranks:
  every rank computes the same seeded permutation and takes its own disjoint slices, so
  together they see each image once per epoch, and step ``k`` of every rank trains on
  the images of step ``k`` of a single process with the same batch size and seed.
- :class:`GlobalBatchNorm` is batch norm over the global batch on the CPU, where
  ``nn.SyncBatchNorm`` refuses to run (on CUDA ``nn.SyncBatchNorm`` itself is used).
- :func:`all_sum` and :func:`gather_objects` carry figures between ranks: evaluation
  counts every image once (no padded duplicates) and sums the counts.

A single process (no ``WORLD_SIZE``, or 1) gets :data:`SINGLE`: every helper is then a
no-op, so the one-process path is unchanged.

The CUDA path (NCCL, one GPU per local rank, ``nn.SyncBatchNorm``) is kept to a few lines
and has not been run on GPUs: none was available where the rest was tested.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cnnlab.errors import CnnlabError

#: Seconds a collective may wait for the other ranks (``CNNLAB_DIST_TIMEOUT`` overrides):
#: long enough for rank 0 to write a checkpoint, short enough that a lost peer ends the job.
DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True)
class Context:
    """This process's place in the job: its rank, the number of processes, and its rank
    on this machine (which picks its GPU)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def active(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run folder and prints progress (rank 0)."""
        return self.rank == 0


SINGLE = Context()
_current = SINGLE


def current() -> Context:
    """The context :func:`start` joined, or :data:`SINGLE`."""
    return _current


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise CnnlabError(f"{name}={text!r} is not a whole number") from None


def env_context() -> Context:
    """The context ``torchrun``'s environment variables describe (:data:`SINGLE` without)."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return SINGLE
    return Context(
        rank=_env_int("RANK", 0),
        world_size=world,
        local_rank=_env_int("LOCAL_RANK", 0),
        local_world_size=_env_int("LOCAL_WORLD_SIZE", 1),
    )


def wants_cuda(device: str) -> bool:
    """Whether a ``--device`` setting means training on CUDA here."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def start(device: str = "auto") -> Context:
    """Join the process group of a ``torchrun`` job (a no-op for a single process).

    On CUDA every process takes the GPU of its local rank and NCCL carries the
    gradients; elsewhere gloo does. Every collective times out after
    ``CNNLAB_DIST_TIMEOUT`` seconds (default :data:`DEFAULT_TIMEOUT`)."""
    global _current
    ctx = env_context()
    if not ctx.active or dist.is_initialized():
        _current = ctx
        return ctx
    if not dist.is_available():
        raise CnnlabError("this PyTorch build has no torch.distributed")
    cuda = wants_cuda(device)
    if cuda:
        if torch.cuda.device_count() <= ctx.local_rank:
            raise CnnlabError(
                f"local rank {ctx.local_rank} has no GPU: this machine has "
                f"{torch.cuda.device_count()}; start at most that many processes per node"
            )
        torch.cuda.set_device(ctx.local_rank)
    text = os.environ.get("CNNLAB_DIST_TIMEOUT", "")
    try:
        timeout = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise CnnlabError(f"CNNLAB_DIST_TIMEOUT={text!r} is not a positive number of seconds")
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout))
    _current = ctx
    return ctx


def stop(wait: bool = True) -> None:
    """Leave the process group (at the end of a job).

    With ``wait``, every rank first meets the others: a rank that tore its group down
    while a peer was still finishing (rank 0 writing the run folder) could abort in
    gloo's threads ("terminate called without an active exception"). After an error
    that not every rank may share, leave at once instead of waiting on a peer that
    will never come."""
    global _current
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
    _current = SINGLE


def device_for(device: torch.device) -> torch.device:
    """``device`` made exact for this rank: in a data-parallel job, CUDA is the GPU of
    this rank's ``LOCAL_RANK`` (chosen by :func:`start`), whatever index was given."""
    if device.type == "cuda" and current().active:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def barrier() -> None:
    """Wait until every rank gets here (a no-op for one process)."""
    if current().active:
        dist.barrier()


@contextlib.contextmanager
def writer_first() -> Iterator[None]:
    """Run the body on rank 0, then on the other ranks: whatever it caches or downloads
    (a decoded image folder, MNIST's files) is written once and then read."""
    ctx = current()
    if ctx.active and not ctx.is_writer:
        barrier()
    try:
        yield
    finally:
        # also when the body failed: the others then meet the same error themselves
        # (a missing folder, say) instead of waiting for rank 0 until the timeout
        if ctx.active and ctx.is_writer:
            barrier()


def all_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """The sums of ``values`` over every rank (float64; the values themselves for one)."""
    if not current().active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device(device))
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` for one process)."""
    if not current().active:
        return [obj]
    out: list[Any] = [None] * current().world_size
    dist.all_gather_object(out, obj)
    return out


def _collective_device(device: torch.device | str) -> torch.device:
    # NCCL carries only GPU tensors; gloo (here) CPU ones
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def rows_of_rank(n: int, ctx: Context | None = None) -> torch.Tensor:
    """This rank's contiguous share of ``n`` rows for evaluation: every row belongs to
    exactly one rank (sizes differ by at most one; nothing is repeated to even them)."""
    ctx = ctx or current()
    return torch.tensor_split(torch.arange(n), ctx.world_size)[ctx.rank]


@dataclass
class Shard:
    """One rank's part of an epoch: its rows in the order it trains on them, how many of
    them each step takes, and each step's loss weight (see :func:`shard_epoch`)."""

    rows: torch.Tensor
    sizes: list[int]
    weights: list[float]


def shard_epoch(order: torch.Tensor, batch_size: int, rank: int, world_size: int) -> Shard:
    """Rank ``rank``'s part of an epoch whose rows come in ``order`` (the same on every
    rank) with global batches of ``batch_size``.

    Global batch ``k`` is ``order[k*B:(k+1)*B]``; each rank takes one of its
    ``world_size`` near-equal slices (``torch.tensor_split``), so the ranks' rows are
    disjoint and cover ``order``. A step's loss is weighted by
    ``local size * world_size / global size``: once DistributedDataParallel averages the
    gradients, the step is that of the global batch's mean loss, even when the last, short
    batch does not split evenly. A rank whose slice of that batch is empty takes the
    batch's first row with weight 0 (every rank must take part in every step): its
    gradient counts for nothing, though batch norm's statistics see it."""
    rows: list[torch.Tensor] = []
    sizes: list[int] = []
    weights: list[float] = []
    n = len(order)
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        mine = torch.tensor_split(batch, world_size)[rank]
        if len(mine):
            weights.append(len(mine) * world_size / len(batch))
        else:
            mine, weights = batch[:1], [*weights, 0.0]
        rows.append(mine)
        sizes.append(len(mine))
    empty = torch.empty(0, dtype=order.dtype, device=order.device)
    return Shard(torch.cat(rows) if rows else empty, sizes, weights)


def _symbolic_tracing() -> bool:
    """Whether ``torch.fx`` is tracing (the speed layer traces models to rewrite them)."""
    fx = torch.fx._symbolic_trace
    probe = getattr(fx, "is_fx_symbolic_tracing", None) or fx.is_fx_tracing
    return bool(probe())


class _AllSum(torch.autograd.Function):
    """The sum of a tensor over every rank, differentiable: each rank's gradient is the
    sum of every rank's gradient of the result (every rank used the same sum)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch: the sums and
    sums of squares of every rank, added by a differentiable all-reduce, so gradients
    flow through the statistics as in one process. ``nn.SyncBatchNorm`` does this on
    GPUs only; this runs anywhere gloo does. In evaluation, or in a single process, it
    is plain batch norm, with the same parameters and buffers (a run's weights load
    into the original model)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise ``input`` (N, C, ...) by the global batch's statistics in training."""
        if _symbolic_tracing():
            # the speed layer traces models; a collective cannot be traced: run as it is
            raise RuntimeError("GlobalBatchNorm is not traceable")
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        self._check_input_dim(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        x = input.float()
        count = torch.full((1,), x.numel() / channels, dtype=x.dtype, device=x.device)
        stats = _AllSum.apply(torch.cat([x.sum(dims), x.square().sum(dims), count]))
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels : 2 * channels] / total - mean.square()).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1  # type: ignore[operator]
                momentum = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * (total / (total - 1).clamp_min(1))
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(unbiased.detach(), momentum)  # type: ignore[union-attr]
        shape = (1, channels) + (1,) * (input.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def global_batch_norm(model: nn.Module, cuda: bool) -> nn.Module:
    """``model`` with every batch norm computing global-batch statistics:
    ``nn.SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm` elsewhere. Modules are
    replaced in place; parameters and buffers are the originals."""
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
            child, GlobalBatchNorm | nn.SyncBatchNorm
        ):
            swapped = GlobalBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,  # type: ignore[arg-type]
                child.affine,
                child.track_running_stats,
            )
            if child.affine:
                swapped.weight, swapped.bias = child.weight, child.bias
            swapped.running_mean = child.running_mean
            swapped.running_var = child.running_var
            swapped.num_batches_tracked = child.num_batches_tracked
            swapped.train(child.training)
            setattr(model, name, swapped)
        else:
            global_batch_norm(child, cuda)
    return model


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` holds a batch norm layer."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
