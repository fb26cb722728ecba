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

__all__ = ["IDX_DTYPES", "MAX_IDX_BYTES", "read_idx", "write_idx"]

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
#: Largest IDX payload :func:`read_idx` accepts by default (2 GiB; EMNIST's largest file
#: holds 547 MB). A larger header is refused before anything is allocated.
MAX_IDX_BYTES = 1 << 31
# Deflate cannot expand its input more than about 1032-fold, so a gzip file of C bytes
# holds at most this many times C bytes; a header declaring more is a lie.
_DEFLATE_MAX_RATIO = 1032


def _read_exact(fh: BinaryIO, out: memoryview) -> int:
    """Fill ``out`` from ``fh``; return how many bytes arrived before end of file."""
    filled = 0
    while filled < len(out):
        n = fh.readinto(out[filled:])
        if not n:
            break
        filled += n
    return filled


def _parse_header(fh: BinaryIO, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """Read and check the magic number and dimensions: (dtype, shape, header bytes)."""
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
    # Only the first dimension (the number of items) may be zero: an item of zero
    # values has no meaning, and a zero there would hide a huge product of the rest.
    if 0 in dims[1:]:
        raise CnnlabError(
            f"{path}: IDX header declares shape {dims}; only the first dimension may be 0"
        )
    return dtype, dims, header


def _check_declared(
    path: Path, dims: tuple[int, ...], dtype: np.dtype, payload: int, max_bytes: int
) -> None:
    """Refuse a declared payload (or one item of it) over the limit, before allocating."""
    item = int(np.prod(dims[1:], dtype=object)) * dtype.itemsize
    if payload > max_bytes or item > max_bytes:
        raise CnnlabError(
            f"{path}: IDX header declares shape {dims} of {dtype.name} "
            f"({max(payload, item):,} bytes), over the limit of {max_bytes:,} bytes"
        )


def _read_stream(
    fh: BinaryIO, path: Path, file_size: int, compressed: bool, max_bytes: int
) -> np.ndarray:
    """Parse an uncompressed IDX stream, reading the values straight into their array.

    ``file_size`` is the size on disk: for a plain file it must equal the declared size
    exactly; for a gzip file it bounds how much the data can expand to. Both checks come
    before the array is allocated.
    """
    dtype, dims, header = _parse_header(fh, path)
    payload = int(np.prod(dims, dtype=object)) * dtype.itemsize
    expected = header + payload
    _check_declared(path, dims, dtype, payload, max_bytes)
    need = f"the header (shape {dims}, {dtype.name}) needs {expected}"
    if not compressed and file_size != expected:
        what = "truncated" if file_size < expected else "has trailing bytes"
        raise CnnlabError(f"{path}: {what}: {file_size} bytes of IDX data but {need}")
    if compressed and expected > file_size * _DEFLATE_MAX_RATIO:
        raise CnnlabError(
            f"{path}: truncated: a gzip file of {file_size} bytes cannot expand to "
            f"the {expected} bytes the header (shape {dims}, {dtype.name}) declares"
        )
    values = np.empty(payload // dtype.itemsize, dtype=dtype)
    got = header + _read_exact(fh, memoryview(values).cast("B"))
    if got < expected:
        raise CnnlabError(f"{path}: truncated: {got} bytes of IDX data but {need}")
    # One byte is enough to know there is more; reading on could inflate a bomb.
    if fh.read(1):
        raise CnnlabError(f"{path}: has trailing bytes: more than {expected} bytes but {need}")
    values = values.reshape(dims)
    if not dtype.isnative:
        values = values.astype(dtype.newbyteorder("="))
    return values


def read_idx(path: str | os.PathLike[str], max_bytes: int | None = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into a writable, native-order numpy array.

    Gzip is recognised by its magic bytes, so a ``.gz`` name is not required, but a
    ``.gz`` file that is not gzip is an error. Values are decompressed straight into
    the result array (no extra copy). The declared size is checked against the file's
    size and ``max_bytes`` (default :data:`MAX_IDX_BYTES`) before anything is allocated,
    and decompression stops one byte past it. Every problem raises :class:`CnnlabError`
    naming the file.
    """
    p = Path(path)
    limit = MAX_IDX_BYTES if max_bytes is None else int(max_bytes)
    try:
        with open(p, "rb") as raw:
            size = os.fstat(raw.fileno()).st_size
            start = raw.read(2)
            if not start:
                raise CnnlabError(f"{p}: file is empty")
            raw.seek(0)
            if start != _GZIP_MAGIC:
                if p.suffix.lower() == ".gz":
                    raise CnnlabError(f"{p}: not a gzip file although the name ends with .gz")
                return _read_stream(raw, p, size, False, limit)
            try:
                with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
                    return _read_stream(fh, p, size, True, limit)
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
