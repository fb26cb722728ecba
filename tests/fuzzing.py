"""How many cases the fuzz, crash and damage suites run.

In a normal test run (CI) each suite runs a bounded number of cases, so that the whole
suite stays quick; ``CNNLAB_FUZZ=full`` runs the many more that the reliability figures
in docs/reliability.md come from::

    CNNLAB_FUZZ=full python -m pytest -m "fuzz or crash" -q
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def full() -> bool:
    """Whether this is an on-demand full run (``CNNLAB_FUZZ=full``)."""
    return os.environ.get("CNNLAB_FUZZ", "").lower() == "full"


def cases(bounded: int, on_demand: int) -> int:
    """``bounded`` cases in a normal run, ``on_demand`` with ``CNNLAB_FUZZ=full``."""
    return on_demand if full() else bounded


def fuzz_settings(bounded: int, on_demand: int) -> settings:
    """Hypothesis settings for a fuzz test: that many examples, no deadline (a slow
    machine is not a failure), derandomised in normal runs so that CI is repeatable."""
    return settings(
        max_examples=cases(bounded, on_demand),
        deadline=None,
        derandomize=not full(),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def reset_peak_memory() -> bool:
    """Start measuring this process's peak memory afresh (Linux: VmHWM via clear_refs).

    A fuzz test runs inside the whole suite's process, whose lifetime peak belongs to
    other tests; resetting the high-water mark makes the peak the fuzz cases' own.
    Returns False where the kernel offers no reset (the peak is then not checked).
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_memory_mib() -> float | None:
    """This process's peak resident memory since the last reset, in MiB (None off Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
