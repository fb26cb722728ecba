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


def _status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """The peak resident memory of the cases a fuzz module runs.

    A fuzz module runs inside the whole suite's process, which already holds what earlier
    tests loaded (torch, trained models), so the lifetime peak says little. ``start()``
    resets Linux's high-water mark (VmHWM, through /proc/self/clear_refs) and remembers the
    memory then in use; ``check()`` then bounds what the cases added and, in a process that
    started small (the fuzz suite run on its own, as the on-demand figures are), the
    process's total. Where the kernel offers no reset nothing is checked.
    """

    def __init__(self) -> None:
        self.start_mib: float | None = None

    def start(self) -> None:
        """Start measuring from now."""
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.start_mib = None
            return
        self.start_mib = _status_mib("VmRSS")

    def peak_mib(self) -> float | None:
        """The peak since :meth:`start` (None where it cannot be measured)."""
        return None if self.start_mib is None else _status_mib("VmHWM")

    def check(self, added_mib: float = 200, total_mib: float = 500) -> str:
        """Assert the bounds; a one-line description of the figures, for ``-s`` output."""
        peak, start = self.peak_mib(), self.start_mib
        if peak is None or start is None:
            return "peak memory not measured on this system"
        assert peak - start < added_mib, f"the cases added {peak - start:.0f} MiB"
        if start < total_mib - added_mib:
            assert peak < total_mib, f"the process peaked at {peak:.0f} MiB"
        return f"peak memory {peak:.0f} MiB ({start:.0f} MiB in use before the cases)"
