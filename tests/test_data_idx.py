"""IDX reading and writing: round trips and every malformed-file case."""

from __future__ import annotations

import gzip
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data.idx import read_idx, write_idx
from cnnlab.errors import CnnlabError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_round_trip_each_dtype(tmp_path: Path, dtype: type, name: str) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((5, 3, 4)) * 50).astype(dtype)
    path = tmp_path / name
    write_idx(path, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert back.flags.writeable
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("shape", [(7,), (2, 3), (2, 3, 4), (1, 2, 3, 4), (0, 28, 28)])
def test_round_trip_shapes(tmp_path: Path, shape: tuple[int, ...]) -> None:
    arr = np.arange(int(np.prod(shape)), dtype=np.uint8).reshape(shape)
    write_idx(tmp_path / "x.gz", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), arr)


def test_header_layout_matches_mnist(tmp_path: Path) -> None:
    write_idx(tmp_path / "imgs", np.zeros((2, 28, 28), np.uint8))
    data = (tmp_path / "imgs").read_bytes()
    assert struct.unpack(">IIII", data[:16]) == (2051, 2, 28, 28)
    assert len(data) == 16 + 2 * 28 * 28


def test_compress_flag_overrides_name(tmp_path: Path) -> None:
    write_idx(tmp_path / "plain.gz", np.zeros(3, np.uint8), compress=False)
    write_idx(tmp_path / "packed", np.zeros(3, np.uint8), compress=True)
    assert (tmp_path / "packed").read_bytes()[:2] == b"\x1f\x8b"
    # a gzip file without the .gz name still reads
    assert read_idx(tmp_path / "packed").shape == (3,)
    with pytest.raises(CnnlabError, match="plain.gz.*not a gzip"):
        read_idx(tmp_path / "plain.gz")


def test_write_rejects_unsupported(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="bad.idx"):
        write_idx(tmp_path / "bad.idx", np.zeros(3, np.uint64))
    with pytest.raises(CnnlabError, match="bad.idx"):
        write_idx(tmp_path / "bad.idx", np.zeros((1, 1, 1, 1, 1), np.uint8))
    assert not (tmp_path / "bad.idx").exists()


def _good_bytes() -> bytes:
    return struct.pack(">IIII", 2051, 2, 2, 2) + bytes(range(8))


@pytest.mark.parametrize(
    ("case", "data", "message"),
    [
        ("empty", b"", "empty"),
        ("magic", b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "magic"),
        ("typecode", b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "type code"),
        ("zero-dims", b"\x00\x00\x08\x00", "dimensions"),
        (
            "five-dims",
            b"\x00\x00\x08\x05" + struct.pack(">IIIII", 1, 1, 1, 1, 1) + b"\x00",
            "dimensions",
        ),
        ("short-header", b"\x00\x00\x08\x03\x00\x00", "header"),
        ("truncated", _good_bytes()[:-3], "truncated"),
        ("trailing", _good_bytes() + b"xyz", "trailing"),
        ("tiny", b"\x00\x00", "too short"),
    ],
)
@pytest.mark.parametrize("compressed", [False, True])
def test_malformed_raises_naming_file(
    tmp_path: Path, case: str, data: bytes, message: str, compressed: bool
) -> None:
    if compressed and case == "empty":
        pytest.skip("an empty file is not gzip")
    path = tmp_path / (f"{case}.idx.gz" if compressed else f"{case}.idx")
    path.write_bytes(gzip.compress(data) if compressed else data)
    with pytest.raises(CnnlabError, match=message) as info:
        read_idx(path)
    assert path.name in str(info.value)
    assert "\n" not in str(info.value)


def test_corrupt_gzip_crc(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(_good_bytes()))
    packed[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(CnnlabError, match=r"crc\.gz.*(CRC|corrupt)"):
        read_idx(path)


def test_truncated_gzip(tmp_path: Path) -> None:
    packed = gzip.compress(np.random.default_rng(1).bytes(5000))
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(CnnlabError, match=r"cut\.gz"):
        read_idx(path)


def test_gzip_of_garbage_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.gz"
    path.write_bytes(b"\x1f\x8b" + b"not really gzip" * 4)
    with pytest.raises(CnnlabError, match=r"junk\.gz"):
        read_idx(path)
    with pytest.raises(CnnlabError, match=r"nope\.gz.*not found"):
        read_idx(tmp_path / "nope.gz")
    with pytest.raises(CnnlabError, match="folder"):
        read_idx(tmp_path)


# Headers that declare far more data than the file holds must be refused from the
# header and the file's size alone, before anything of the declared size is allocated.
_LIES = {
    "28gib": bytes.fromhex("000009020002ad300002ad30"),
    "50m-images": struct.pack(">IIII", 0x803, 50_000_000, 28, 28),
    "50m-labels": struct.pack(">II", 0x801, 50_000_000),
    "zero-then-huge": struct.pack(">IIII", 0x803, 0, 0xFFFFFFFF, 0xFFFFFFFF),
    "zero-inner": struct.pack(">IIII", 0x803, 5, 0, 28),
}


@pytest.mark.parametrize("case", sorted(_LIES))
@pytest.mark.parametrize("compressed", [False, True])
def test_lying_header_is_one_line_error(tmp_path: Path, case: str, compressed: bool) -> None:
    data = _LIES[case]
    path = tmp_path / (f"{case}.idx.gz" if compressed else f"{case}.idx")
    path.write_bytes(gzip.compress(data) if compressed else data)
    with pytest.raises(CnnlabError) as info:
        read_idx(path)
    msg = str(info.value)
    assert path.name in msg and "\n" not in msg


def test_declared_size_checked_before_allocating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No array larger than the file could fill is ever requested."""
    asked: list[int] = []
    real_empty = np.empty

    def spy(shape, *args, **kwargs):  # noqa: ANN001, ANN202
        asked.append(int(np.prod(shape)))
        return real_empty(shape, *args, **kwargs)

    monkeypatch.setattr(np, "empty", spy)
    for case, data in _LIES.items():
        for packed in (data, gzip.compress(data)):
            path = tmp_path / f"{case}.idx"
            path.write_bytes(packed)
            with pytest.raises(CnnlabError):
                read_idx(path)
    assert max(asked, default=0) <= 1 << 20


def test_gzip_bomb_refused_by_size_limit(tmp_path: Path) -> None:
    # 64 MiB of zeros packs into ~64 KB: the header is honest, the limit refuses it
    header = struct.pack(">IIII", 0x803, 64 * 1024, 32, 32)
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    packed = comp.compress(header)
    zeros = bytes(1 << 20)
    for _ in range(64):
        packed += comp.compress(zeros)
    packed += comp.flush()
    path = tmp_path / "bomb.idx.gz"
    path.write_bytes(packed)
    assert path.stat().st_size < 200_000
    with pytest.raises(CnnlabError, match=r"bomb\.idx\.gz.*limit"):
        read_idx(path, max_bytes=16 << 20)
    assert read_idx(path).shape == (64 * 1024, 32, 32)


def test_gzip_trailing_data_is_not_decompressed_to_the_end(tmp_path: Path) -> None:
    """A small header followed by a huge compressed tail stops at the first extra byte."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = comp.compress(_good_bytes()) + comp.flush(zlib.Z_FULL_FLUSH)
    # a full flush makes each block independent, so one compressed MiB can be repeated:
    # 2 GiB of trailing zeros in about 2 MB (the trailer's CRC is never reached)
    mib = comp.compress(bytes(1 << 20)) + comp.flush(zlib.Z_FULL_FLUSH)
    packed = head + mib * 2048 + comp.flush()
    path = tmp_path / "tail.gz"
    path.write_bytes(packed)
    start = time.perf_counter()
    with pytest.raises(CnnlabError, match=r"tail\.gz.*trailing"):
        read_idx(path)
    assert time.perf_counter() - start < 1.0
