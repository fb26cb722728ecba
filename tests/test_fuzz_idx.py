"""Fuzzing the IDX reader and load_dataset: every input is read or refused in one line.

Hypothesis builds headers from scratch (magic bytes, type codes, dimension counts, huge
and zero dimensions, payloads of any length, gzip or not); seeded mutators flip,
truncate, insert and rewrite bytes of valid small files. Whatever comes in, the only
exception allowed is a one-line :class:`CnnlabError` naming the file, and the process
stays under 500 MB. A normal run is bounded; ``CNNLAB_FUZZ=full`` runs over 10,000
inputs (run with ``-s`` to see the counts and the peak memory)::

    CNNLAB_FUZZ=full python -m pytest -m fuzz -s tests/test_fuzz_idx.py
"""

from __future__ import annotations

import gzip
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnnlab.data.datasets import clear_cache, load_dataset
from cnnlab.data.idx import IDX_DTYPES, read_idx, write_idx
from cnnlab.data.sources import FILES
from cnnlab.errors import CnnlabError
from tests.fuzzing import PeakMemory, cases, fuzz_settings

pytestmark = pytest.mark.fuzz

HYPOTHESIS_CASES = (150, 4000)
MUTATED_CASES = (300, 5000)
DATASET_CASES = (40, 1200)

_counts: dict[str, int] = {"read": 0, "refused": 0}


def _read_or_refuse(path: Path) -> None:
    """Read ``path``; a refusal must be one line naming the file, anything else fails."""
    try:
        arr = read_idx(path)
    except CnnlabError as exc:
        msg = str(exc)
        assert "\n" not in msg and path.name in msg, msg
        _counts["refused"] += 1
        return
    assert arr.dtype.isnative and 1 <= arr.ndim <= 4
    _counts["read"] += 1


MEMORY = PeakMemory()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    MEMORY.start()
    return tmp_path_factory.mktemp("fuzz-idx")


_DIMS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 28, 255, 60000, 175408, 2**31, 2**32 - 1]),
    st.integers(0, 2**32 - 1),
    st.integers(0, 40),
)


@st.composite
def idx_bytes(draw: st.DrawFn) -> bytes:
    """A file that starts like IDX: mostly plausible headers, sometimes plain junk."""
    zero = draw(st.sampled_from([b"\x00\x00", b"\x00\x00", b"\x00\x00", b"\x01\x00", b"\x1f\x8b"]))
    code = draw(st.one_of(st.sampled_from(sorted(IDX_DTYPES)), st.integers(0, 255)))
    ndim = draw(st.one_of(st.integers(1, 4), st.integers(0, 255)))
    dims = draw(st.lists(_DIMS, min_size=0, max_size=min(ndim, 6)))
    header = zero + bytes([code, ndim]) + b"".join(struct.pack(">I", d) for d in dims)
    declared = 1
    for d in dims:
        declared *= d
    itemsize = IDX_DTYPES[code].itemsize if code in IDX_DTYPES else 1
    exact = declared * itemsize if declared * itemsize < 4096 else 0
    length = draw(st.one_of(st.just(exact), st.integers(0, 2048)))
    payload = draw(st.binary(min_size=min(length, 64), max_size=min(length, 64)))
    payload = (
        (payload * (length // max(len(payload), 1) + 1))[:length] if payload else bytes(length)
    )
    cut = draw(st.integers(0, len(header)))
    return header[: cut if draw(st.booleans()) and cut < 4 else len(header)] + payload


@fuzz_settings(*HYPOTHESIS_CASES)
@given(data=idx_bytes(), packed=st.booleans(), suffix=st.sampled_from(["", ".gz"]))
def test_hypothesis_headers(scratch: Path, data: bytes, packed: bool, suffix: str) -> None:
    path = scratch / f"hyp.idx{suffix}"
    path.write_bytes(gzip.compress(data, mtime=0) if packed else data)
    _read_or_refuse(path)
    _counts["hypothesis"] = _counts.get("hypothesis", 0) + 1


def _valid_files(rng: random.Random, folder: Path) -> list[Path]:
    """Small valid IDX files of every type code and dimension count, raw and gzip'd."""
    out = []
    for i, dtype in enumerate(IDX_DTYPES.values()):
        for ndim in range(1, 5):
            shape = tuple(rng.randint(1, 4) for _ in range(ndim))
            arr = np.frombuffer(rng.randbytes(int(np.prod(shape)) * dtype.itemsize), dtype)
            for suffix in ("", ".gz"):
                path = folder / f"valid{i}-{ndim}.idx{suffix}"
                write_idx(path, arr.reshape(shape).astype(dtype.newbyteorder("=")))
                out.append(path)
    return out


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random edits: flips, truncation, insertion, deletion, dimension rewrite."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip bits of a byte
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncate
            del buf[pos:]
        elif op == 2:  # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.randint(1, 64))
        elif op == 3:  # delete a stretch
            del buf[pos : pos + rng.randint(1, 32)]
        elif op == 4 and len(buf) >= 8:  # rewrite one of the first dimensions
            at = 4 + 4 * rng.randrange(min(4, (len(buf) - 4) // 4))
            value = rng.choice([0, 1, 2**31, 2**32 - 1, rng.randrange(2**32)])
            buf[at : at + 4] = struct.pack(">I", value)
        elif op == 5 and len(buf) >= 4:  # random magic byte
            buf[rng.randrange(4)] = rng.randrange(256)
    return bytes(buf)


def test_seeded_mutations(scratch: Path) -> None:
    rng = random.Random(20261129)
    folder = scratch / "mutations"
    folder.mkdir(exist_ok=True)
    valid = [(p, p.read_bytes()) for p in _valid_files(rng, folder)]
    total = cases(*MUTATED_CASES)
    for _ in range(total):
        source, data = rng.choice(valid)
        target = folder / f"m{source.name}"
        if source.name.endswith(".gz") and rng.random() < 0.5:
            # mutate inside the gzip: the reader sees a valid gzip of a damaged IDX
            with gzip.open(source, "rb") as fh:
                inner = fh.read()
            target.write_bytes(gzip.compress(mutate(rng, inner), mtime=0))
        else:
            target.write_bytes(mutate(rng, data))
        _read_or_refuse(target)
    _counts["mutated"] = total
    print(f"\nIDX mutations: {total} inputs")


def test_load_dataset_on_damaged_folders(scratch: Path) -> None:
    rng = random.Random(7)
    root = scratch / "datasets"
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    good: dict[str, bytes] = {}
    for split, n in (("train", 6), ("test", 3)):
        images = np.frombuffer(rng.randbytes(n * 784), np.uint8).reshape(n, 28, 28)
        for kind, arr in (("images", images), ("labels", np.arange(n, dtype=np.uint8))):
            name = FILES[f"{split}_{kind}"]
            write_idx(folder / name, arr)
            good[name] = (folder / name).read_bytes()
    total = cases(*DATASET_CASES)
    for _ in range(total):
        for name, data in good.items():
            (folder / name).write_bytes(data)
        split = rng.choice(["train", "test"])
        victim = FILES[f"{split}_{rng.choice(['images', 'labels'])}"]
        with gzip.open(folder / victim, "rb") as fh:
            inner = fh.read()
        damaged = mutate(rng, inner)
        packed = gzip.compress(damaged, mtime=0) if rng.random() < 0.7 else damaged
        (folder / victim).write_bytes(packed)
        clear_cache()
        try:
            data = load_dataset("mnist", split, data_dir=root, download=False)
        except CnnlabError as exc:
            assert "\n" not in str(exc)
            _counts["refused"] += 1
        else:
            assert len(data) > 0 and data.images.shape[1:] == (1, 28, 28)
            assert int(data.labels.min()) >= 0 and int(data.labels.max()) < 10
            _counts["read"] += 1
    clear_cache()
    _counts["datasets"] = total
    print(f"\nload_dataset on damaged folders: {total} inputs")


def test_counts_and_memory() -> None:
    """Runs last in this module: every suite above ran its cases, memory stayed bounded."""
    expected = cases(*HYPOTHESIS_CASES) + cases(*MUTATED_CASES) + cases(*DATASET_CASES)
    seen = _counts.get("hypothesis", 0) + _counts.get("mutated", 0) + _counts.get("datasets", 0)
    print(
        f"\nIDX fuzz: {seen} inputs ({_counts['read']} read, {_counts['refused']} refused), "
        + MEMORY.check()
    )
    if seen:  # the suites above may be deselected with -k
        assert seen >= expected
