"""Read and write IDX files, the format MNIST and its relatives ship in.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values in C order.
The files are usually gzip-compressed; both forms are handled here. Reading
decompresses straight into the result array, so the 47 MB MNIST training images
load in about a fifth of a second.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cnnlab.atomic import write_bytes
from cnnlab.errors import CnnlabError

__all__ = ["IDX_DTYPES", "read_idx", "write_idx"]

#: IDX type code -> big-endian numpy dtype of one value.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DIMS = 4
_MAX_BYTES = 1 << 36  # 64 GiB: refuse headers that could only be corrupt


def _read_exact(fh: BinaryIO, out: memoryview) -> int:
    """Fill ``out`` from ``fh``; return how many bytes arrived before end of file."""
    filled = 0
    while filled < len(out):
        n = fh.readinto(out[filled:])
        if not n:
            break
        filled += n
    return filled


def _count_rest(fh: BinaryIO) -> int:
    """Bytes left in ``fh`` (read in chunks, so trailing data cannot exhaust memory)."""
    extra = 0
    while chunk := fh.read(1 << 20):
        extra += len(chunk)
    return extra


def _read_stream(fh: BinaryIO, path: Path) -> np.ndarray:
    """Parse an uncompressed IDX stream, reading the values straight into their array."""
    magic = fh.read(4)
    if len(magic) < 4:
        raise CnnlabError(f"{path}: too short for an IDX header ({len(magic)} bytes)")
    if magic[0] != 0 or magic[1] != 0:
        raise CnnlabError(
            f"{path}: not an IDX file (magic number 0x{magic.hex()} "
            "does not start with two zero bytes)"
        )
    code, ndim = magic[2], magic[3]
    dtype = IDX_DTYPES.get(code)
    if dtype is None:
        raise CnnlabError(f"{path}: unknown IDX type code 0x{code:02X} (magic 0x{magic.hex()})")
    if not 1 <= ndim <= _MAX_DIMS:
        raise CnnlabError(
            f"{path}: IDX header declares {ndim} dimensions, expected 1 to {_MAX_DIMS}"
        )
    header = 4 + 4 * ndim
    dim_bytes = fh.read(4 * ndim)
    if len(dim_bytes) < 4 * ndim:
        raise CnnlabError(f"{path}: truncated IDX header ({4 + len(dim_bytes)} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(dim_bytes, dtype=">u4"))
    count = int(np.prod(dims, dtype=object))
    expected = header + count * dtype.itemsize
    if count * dtype.itemsize > _MAX_BYTES:
        raise CnnlabError(f"{path}: IDX header declares shape {dims}, too large to load")
    values = np.empty(count, dtype=dtype)
    got = header + _read_exact(fh, memoryview(values).cast("B"))
    if got == expected:
        got += _count_rest(fh)
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise CnnlabError(
            f"{path}: {what}: {got} bytes of IDX data but the header "
            f"(shape {dims}, {dtype.name}) needs {expected}"
        )
    values = values.reshape(dims)
    if not dtype.isnative:
        values = values.astype(dtype.newbyteorder("="))
    return values


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into a writable, native-order numpy array.

    Gzip is recognised by its magic bytes, so a ``.gz`` name is not required, but a
    ``.gz`` file that is not gzip is an error. Values are decompressed straight into
    the result array (no extra copy). Every problem raises :class:`CnnlabError`
    naming the file.
    """
    p = Path(path)
    try:
        with open(p, "rb") as raw:
            start = raw.read(2)
            if not start:
                raise CnnlabError(f"{p}: file is empty")
            raw.seek(0)
            if start != _GZIP_MAGIC:
                if p.suffix.lower() == ".gz":
                    raise CnnlabError(f"{p}: not a gzip file although the name ends with .gz")
                return _read_stream(raw, p)
            try:
                with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
                    return _read_stream(fh, p)
            except EOFError:
                raise CnnlabError(
                    f"{p}: truncated gzip file (the compressed data ends early)"
                ) from None
            except (OSError, zlib.error) as exc:
                raise CnnlabError(f"{p}: corrupt gzip data ({exc})") from None
    except FileNotFoundError:
        raise CnnlabError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise CnnlabError(f"{p}: is a folder, expected an IDX file") from None
    except OSError as exc:
        raise CnnlabError(f"{p}: cannot read ({exc.strerror or exc})") from None


def write_idx(
    path: str | os.PathLike[str], array: np.ndarray, compress: bool | None = None
) -> None:
    """Write ``array`` as an IDX file, atomically.

    ``compress=None`` gzips when the name ends with ``.gz``. The array's dtype picks
    the IDX type code (uint8, int8, int16, int32, float32, float64).
    """
    p = Path(path)
    arr = np.asarray(array)
    if compress is None:
        compress = p.suffix.lower() == ".gz"
    code = next(
        (c for c, dt in IDX_DTYPES.items() if dt.newbyteorder("=") == arr.dtype.newbyteorder("=")),
        None,
    )
    if code is None:
        supported = ", ".join(dt.name for dt in IDX_DTYPES.values())
        raise CnnlabError(f"{p}: cannot store dtype {arr.dtype} in IDX (supported: {supported})")
    if not 1 <= arr.ndim <= _MAX_DIMS:
        raise CnnlabError(f"{p}: IDX holds 1 to {_MAX_DIMS} dimensions, got shape {arr.shape}")
    if any(d >= 2**32 for d in arr.shape):
        raise CnnlabError(f"{p}: dimension too large for IDX in shape {arr.shape}")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()
    data = header + body
    if compress:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    write_bytes(p, data)
