"""Images read batch by batch from a memory-mapped ``.npy`` file, for data sets larger
than memory.

:class:`MappedImages` stands where a uint8 (N, C, H, W) tensor would: ``len``,
``shape``, ``dtype``, ``dim()``, and indexing (an int, a slice, index lists, boolean
masks) that reads just those rows from the file and returns an ordinary tensor. Splits
are index lists over the same file (:meth:`MappedImages.subset`), never copies.

Rows touched through a mapping count towards the process's resident memory until the
mapping lets go of them, even though the kernel could drop them at any time; and a read
maps more than the rows read (read-ahead and fault-around map whole neighbouring blocks
already in the page cache: measured 5 to 10 times as much for random rows of 87 kB). The
mapping's pages are therefore handed back (``madvise(MADV_DONTNEED)``, which costs little
where few pages are mapped) after every :data:`RELEASE_BYTES` read, about every batch, so
that resident memory stays far below the data set's size while the page cache keeps
whatever fits.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import CnnlabError

__all__ = ["RELEASE_BYTES", "MappedImages", "gather_rows", "is_mapped", "subset_rows"]

#: Bytes read from a mapping after which its pages are handed back.
RELEASE_BYTES = 4 << 20
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


class _Mapping:
    """One read-only mapping of a ``.npy`` file's array, shared by its subsets."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):  # what np.save writes for a header too long for 1.0
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise CnnlabError(f"{path}: .npy version {version} is not read")
            offset = fh.tell()
            size = os.fstat(fh.fileno()).st_size
            if fortran or dtype != np.uint8 or len(shape) != 4:
                raise CnnlabError(f"{path}: not a C-ordered uint8 N×C×H×W array")
            if size < offset + int(np.prod(shape)):
                raise CnnlabError(f"{path}: shorter than its {shape} array")
            self.map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.path = path
        count = int(np.prod(shape))
        self.array: np.ndarray = (
            np.frombuffer(self.map, dtype=np.uint8, count=count, offset=offset).reshape(shape)
            if count
            else np.zeros(shape, dtype=np.uint8)
        )
        self.unreleased = 0

    def read(self, rows: np.ndarray) -> np.ndarray:
        """A copy of ``rows`` (ascending indices: the file is read front to back)."""
        out = self.array[rows]
        self.unreleased += out.nbytes
        if self.unreleased >= RELEASE_BYTES:
            self.release()
        return out

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """A copy of the rows ``start`` to ``stop``."""
        out = np.array(self.array[start:stop])
        self.unreleased += out.nbytes
        if self.unreleased >= RELEASE_BYTES:
            self.release()
        return out

    def release(self) -> None:
        """Hand the mapping's resident pages back (they stay in the page cache)."""
        self.unreleased = 0
        if self.map is not None and _DONTNEED is not None:
            self.map.madvise(_DONTNEED)


class MappedImages:
    """uint8 (N, C, H, W) images kept in a ``.npy`` file and read as they are indexed.

    ``rows`` (ascending or not) selects and orders a subset of the file's images;
    ``None`` is all of them. Indexing returns tensors; :meth:`subset` another view.
    """

    dtype = torch.uint8

    def __init__(self, source: str | os.PathLike[str] | _Mapping, rows: Any = None) -> None:
        self._map = source if isinstance(source, _Mapping) else _Mapping(Path(source))
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        n = self._map.array.shape[0] if self._rows is None else self._rows.shape[0]
        self.shape = torch.Size((n, *self._map.array.shape[1:]))

    @property
    def path(self) -> Path:
        """The ``.npy`` file read."""
        return self._map.path

    def __len__(self) -> int:
        return self.shape[0]

    def dim(self) -> int:
        """4, like the tensor this stands for."""
        return len(self.shape)

    def numel(self) -> int:
        """How many uint8 values the images hold in all."""
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """The images' size in bytes (what loading them into memory would take)."""
        return self.numel()

    def subset(self, index: Any) -> MappedImages:
        """The images at ``index`` (positions, or a boolean mask, in this view) as a view."""
        positions = _positions(index, len(self))
        rows = positions if self._rows is None else self._rows[positions]
        return MappedImages(self._map, rows)

    def take(self, index: Any) -> torch.Tensor:
        """The images at ``index`` (positions or a boolean mask), read into a tensor.

        The file is read in ascending order whatever the order asked for (neighbouring
        rows share pages and read-ahead), and the rows put back in the order asked."""
        positions = _positions(index, len(self))
        rows = positions if self._rows is None else self._rows[positions]
        if rows.size and np.all(rows[1:] >= rows[:-1]):
            return torch.from_numpy(self._map.read(rows))
        order = np.argsort(rows, kind="stable")
        out = np.empty((rows.shape[0], *self.shape[1:]), dtype=np.uint8)
        out[order] = self._map.read(rows[order])
        return torch.from_numpy(out)

    def __getitem__(self, index: Any) -> torch.Tensor:
        rest: tuple[Any, ...] = ()
        if isinstance(index, tuple):  # images[idx, 0]: the rows first, then the rest
            index, rest = index[0], index[1:]
        if isinstance(index, int | np.integer) or (
            isinstance(index, torch.Tensor) and index.dim() == 0 and not index.is_floating_point()
        ):
            i = int(index)
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} is out of range for {len(self)} images")
            one = self.take([i % len(self)])[0]
            return one[rest] if rest else one
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1 and self._rows is None:
                out = torch.from_numpy(self._map.read_range(start, max(start, stop)))
            else:
                out = self.take(np.arange(start, stop, step))
        else:
            out = self.take(index)
        return out[(slice(None), *rest)] if rest else out

    def to_tensor(self) -> torch.Tensor:
        """All the images in memory (what a data set that fits would have been)."""
        return self[:]

    def __repr__(self) -> str:
        return f"MappedImages({self.path}, {'x'.join(str(d) for d in self.shape)})"


def _positions(index: Any, n: int) -> np.ndarray:
    """Integer positions (negative ones wrapped) from an index list, tensor or mask."""
    if isinstance(index, torch.Tensor):
        index = index.cpu().numpy()
    idx = np.asarray(index)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise IndexError(f"a mask of {idx.shape} for {n} images")
        return np.flatnonzero(idx)
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    if idx.dtype.kind not in "iu" or idx.ndim != 1:
        raise IndexError(f"cannot index images with {idx.dtype} of shape {idx.shape}")
    idx = idx.astype(np.int64)
    if idx.min() < -n or idx.max() >= n:
        raise IndexError(f"an index out of range for {n} images")
    return np.where(idx < 0, idx + n, idx)


def is_mapped(images: Any) -> bool:
    """Whether ``images`` are read from a file as they are indexed (not a tensor)."""
    return isinstance(images, MappedImages)


def subset_rows(images: Any, index: Any) -> Any:
    """``images[index]``, as a view for :class:`MappedImages` (nothing read yet)."""
    if is_mapped(images):
        return images.subset(index)
    return images[torch.as_tensor(index)]


def gather_rows(images: Any, index: Any) -> torch.Tensor:
    """``images[index]`` as a tensor, read from the file for :class:`MappedImages`."""
    if is_mapped(images):
        return images.take(index)
    return images[torch.as_tensor(index)]
