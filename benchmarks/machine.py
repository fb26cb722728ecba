"""What every benchmark result records: hardware, versions, date, command, load.

Imported by the benchmark scripts beside it (``python benchmarks/NAME.py`` puts this
folder on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

#: The competitor of ``--busy`` runs: one CPU-bound program, as a browser tab, an editor's
#: indexer or a video call on a learner's laptop. It spins while the benchmark lives
#: (``kill -0`` is a shell builtin), so a benchmark stopped by a signal leaves none behind.
BUSY_LOOP = ["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do :; done"]


@contextlib.contextmanager
def competitor(active: bool = True) -> Iterator[None]:
    """Run :data:`BUSY_LOOP` beside the measured process: started before it (and given a
    moment to be scheduled), killed after it. Not pinned to a core, as a user's other
    programs are not. Does nothing when ``active`` is false."""
    if not active:
        yield
        return
    proc = subprocess.Popen(BUSY_LOOP)
    try:
        time.sleep(0.2)
        yield
    finally:
        proc.kill()
        proc.wait()


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``, else what ``platform`` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    """Total memory in GB (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1e6, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages, or None where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def git_commit() -> str | None:
    """The repository's current commit, if this runs inside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def describe(script: str, argv: list[str] | None = None) -> dict[str, Any]:
    """Hardware, versions, date and the command line, for a result file."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "command": shlex.join(
            ["python", f"benchmarks/{script}", *(sys.argv[1:] if argv is None else argv)]
        ),
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "hardware": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "usable_cores": usable,
            "memory_gb": memory_gb(),
            "machine": platform.machine(),
            "os": f"{platform.system()} {platform.release()}",
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cnnlab": _cnnlab_version(),
        },
        "torch_threads": torch.get_num_threads(),
        "native_kernels": _native_status(),
        "git_commit": git_commit(),
        "load_average_start": load_average(),
    }


def _native_status() -> str | None:
    try:
        from cnnlab.speed import status
    except ImportError:
        return None
    return status()


def _cnnlab_version() -> str | None:
    try:
        from cnnlab import __version__
    except ImportError:
        return None
    return __version__


def median(values: list[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    """A number for a markdown table; ``—`` for a missing one."""
    return "—" if value is None else f"{value:.{digits}f}{suffix}"
