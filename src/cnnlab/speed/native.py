"""Build and load the C kernels: compiled once per machine into a cache folder.

Every ``*.c`` file in ``csrc/`` goes into one shared library; the ``*.h`` files there are
bodies that the sources include. It is compiled with
``cc -O3 -march=native`` (``$CC`` overrides the compiler), and ``-fopenmp`` where torch's
OpenMP runtime is GNU libgomp (as in the PyPI wheels): the library then links to the
libgomp torch has already loaded and its threads are torch's. It is tuned to the CPU it runs on and cached under a name that hashes the sources and headers, the
compiler command and the CPU's model and flags; a cache folder shared between different
machines therefore never hands one machine another's binary. The compiler writes to a
temporary file that is renamed into place, so a crash or a concurrent build never leaves
a half-written library. ``CNNLAB_NATIVE=0`` turns the kernels off;
the library goes to ``kernels/`` in the user cache (:func:`cnnlab.cache.cache_dir`,
moved by ``CNNLAB_CACHE``); ``CNNLAB_CFLAGS`` adds
compiler flags (``-mno-avx512f`` builds the AVX2 code on an AVX-512 CPU, which is how the
tests check it).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cnnlab.cache import cache_dir

CSRC = Path(__file__).with_name("csrc")
SOURCES = sorted(CSRC.glob("*.c"))
FLAGS = ["-O3", "-march=native", "-shared", "-fPIC"]
_reason = "not tried yet"


def _cpu_signature() -> str:
    """The CPU's model name and feature flags (Linux), which -march=native depends on."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags")
    lines = [ln for ln in text.splitlines() if ln.split(":")[0].strip() in wanted]
    return "\n".join(sorted(set(lines)))


def _supported() -> str | None:
    """Why the kernels cannot be built here, or None when they can be tried."""
    if os.environ.get("CNNLAB_NATIVE", "1") == "0":
        return "turned off by CNNLAB_NATIVE=0"
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return f"no kernels for {sys.platform} {platform.machine()}"
    if "avx2" not in _cpu_signature().split():
        return "the CPU has no AVX2"
    return None


def _flags(openmp: bool = False) -> list[str]:
    return FLAGS + (["-fopenmp"] if openmp else []) + os.environ.get("CNNLAB_CFLAGS", "").split()


def _torch_openmp_is_libgomp() -> bool:
    """Whether the OpenMP runtime in this process (torch's) is GNU libgomp: a library
    built with ``-fopenmp`` then shares torch's threads instead of bringing its own."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    return "libgomp" in maps and "libiomp" not in maps and "libomp.so" not in maps


def _target(compiler: str, openmp: bool) -> Path:
    digest = hashlib.sha256()
    for source in sorted(p for p in CSRC.iterdir() if p.suffix in (".c", ".h")):
        digest.update(source.name.encode() + source.read_bytes())
    digest.update(" ".join([compiler, *_flags(openmp)]).encode() + _cpu_signature().encode())
    return cache_dir() / "kernels" / f"cnnlab-kernels-{digest.hexdigest()[:16]}.so"


def _compile(compiler: str, target: Path, openmp: bool = False) -> str | None:
    """Compile SOURCES into ``target`` atomically; an error message, or None on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run(
            [compiler, *_flags(openmp), *map(str, SOURCES), "-o", tmp],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["no message"])[0]
            return f"{compiler} failed: {first}"
        os.replace(tmp, target)
        return None
    except (OSError, subprocess.SubprocessError) as err:
        return f"{compiler} failed: {err}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, n = ctypes.c_void_p, ctypes.c_long
    for dtype in ("bf16", "f32"):
        forward = getattr(lib, f"pool2_forward_{dtype}")
        forward.argtypes = [p, p, p, n, n, n, n, ctypes.c_int]
        forward.restype = None
        backward = getattr(lib, f"pool2_backward_{dtype}")
        backward.argtypes = [p, p, p, n, n, n, n]
        backward.restype = None
    lib.dropout_mask_bf16.argtypes = [p, n, ctypes.c_uint64, ctypes.c_int, ctypes.c_uint16]
    lib.dropout_mask_f32.argtypes = [p, n, ctypes.c_uint64, ctypes.c_int, ctypes.c_uint32]
    lib.dropout_mask_bf16.restype = lib.dropout_mask_f32.restype = None
    for dtype in ("bf16", "f32"):
        shape = [n] * 6  # N, H, W, K, P, Co
        forward = getattr(lib, f"conv1_forward_{dtype}")
        forward.argtypes = [p, p, p, p, *shape]
        backward = getattr(lib, f"conv1_backward_{dtype}")
        backward.argtypes = [p, p, p, p, *shape]
        pool_forward = getattr(lib, f"conv1_pool_forward_{dtype}")
        pool_forward.argtypes = [p, p, p, p, p, *shape, ctypes.c_int]
        pool_backward = getattr(lib, f"conv1_pool_backward_{dtype}")
        pool_backward.argtypes = [p, p, p, p, p, *shape]
        for fn in (forward, backward, pool_forward, pool_backward):
            fn.restype = ctypes.c_int
    for dtype in ("bf16", "f32"):
        stats = getattr(lib, f"bn_stats_{dtype}")
        stats.argtypes = [p, n, n, p, p]  # x, M, C, mean, var
        stats.restype = ctypes.c_int
        apply = getattr(lib, f"bn_apply_{dtype}")
        apply.argtypes = [p, p, n, n, p, p, p, ctypes.c_int]  # x, y, M, C, mean, scale, bias, relu
        apply.restype = ctypes.c_int
        backward = getattr(lib, f"bn_backward_{dtype}")
        backward.argtypes = [p, p, p, n, n, p, p, p, p, ctypes.c_int, p, p]
        backward.restype = ctypes.c_int
    lib.pool2_block_bf16.argtypes = []
    lib.pool2_block_bf16.restype = ctypes.c_int
    return lib


@functools.lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The compiled kernel library, built on first call; None where it is unavailable
    (:func:`native_status` says why)."""
    global _reason
    why = _supported()
    if why:
        _reason = why
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        _reason = "no C compiler (cc or $CC) found"
        return None
    # With OpenMP where torch's runtime is libgomp; without where that is not so, or
    # where the compiler cannot (the failed attempt leaves the plain build to be found).
    target = _target(compiler, openmp=False)
    if _torch_openmp_is_libgomp() and not target.exists():
        threaded = _target(compiler, openmp=True)
        if threaded.exists() or _compile(compiler, threaded, openmp=True) is None:
            target = threaded
    if not target.exists():
        error = _compile(compiler, target)
        if error:
            _reason = error
            return None
    try:
        lib = _bind(ctypes.CDLL(str(target)))
    except (OSError, AttributeError) as err:
        _reason = f"could not load {target}: {err}"
        return None
    _reason = f"loaded {target}"
    return lib


def native_status() -> str:
    """One line: whether the native kernels are in use, and if not, why."""
    load()
    return _reason
