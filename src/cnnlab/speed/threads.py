"""How many CPU threads torch uses: chosen by timing the work, and chosen again as load changes.

On an idle 2-core CPU two threads train the tutorials' networks about 1.3× faster than
one. Beside one other busy program they train 3–4× *slower* than one: every operator
ends at a barrier where the thread that shares its core with the other program is
waited for (a yielding OpenMP wait policy does not change that; it is the sharing of
the core, not the spinning). No fixed setting is right for a laptop whose load comes
and goes, so :class:`ThreadPolicy` measures.

It runs a few steps with each candidate count (a *trial*), keeps the fastest, and
watches the step time. When steps grow 1.5× slower than the trial measured, load has
arrived and only fewer threads can help: it tries the smaller counts against the
recent steps. After a hold time (2 s, doubled each time a trial confirms the choice, at
most 16 s) it tries the other counts, so that a machine that became idle is noticed
too. A trial costs a few steps at the slower setting (one, when it is twice as slow),
and holds are long enough to keep that under 5% of the time.

Several processes on one machine (data-parallel training, ``torchrun --nproc-per-node
N``) share its cores: each one's candidates are drawn from its share,
``cores // LOCAL_WORLD_SIZE`` (:func:`process_cores`), so world size × threads stays
within the cores (2 processes on 2 cores: one thread each, no trials).

Thread counts change floating-point summation order: two runs that chose different
counts give weights that differ in rounding. Fixed ``--threads N`` gives bit-identical
runs and resumes; ``--threads auto`` (the command line's default) gives speed.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import deque

import torch

__all__ = [
    "ThreadPolicy",
    "candidate_threads",
    "policy_for",
    "process_cores",
    "set_threads",
    "usable_cores",
]

_auto = False


def set_threads(threads: int | str) -> None:
    """This process's CPU threads: a count (as ``torch.set_num_threads``, bit-identical
    runs) or ``"auto"`` (a :class:`ThreadPolicy` in each trainer: speed on a busy machine)."""
    global _auto
    if threads == "auto":
        _auto = True
        # start within this process's share of the cores (several processes may share them)
        torch.set_num_threads(min(torch.get_num_threads(), process_cores()))
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be 'auto' or a positive count, not {threads!r}")
    _auto = False
    torch.set_num_threads(threads)


def policy_for(device: torch.device, **options: float) -> ThreadPolicy | None:
    """A fresh policy (with ``options``) when this process runs ``"auto"`` threads on the
    CPU, else None."""
    return ThreadPolicy(**options) if _auto and device.type == "cpu" else None  # type: ignore[arg-type]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def process_cores() -> int:
    """This process's share of the usable cores: all of them, or, when ``torchrun`` (or
    ``cnnlab train --nproc``) started ``LOCAL_WORLD_SIZE`` processes on this machine,
    an equal share of them (at least 1)."""
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, usable_cores() // local)


def candidate_threads(cores: int | None = None) -> list[int]:
    """The counts a trial compares: every core of this process's share
    (:func:`process_cores`), half of them, and one."""
    n = process_cores() if cores is None else cores
    return sorted({n, max(1, n // 2), 1}, reverse=True)


class ThreadPolicy:
    """Picks torch's intra-op thread count by timing steps; call :meth:`tick` after each.

    Args:
        candidates: thread counts to compare (default :func:`candidate_threads`).
        trial_steps: timed steps per candidate in a trial (one more is run and not
            timed after each switch, while the new thread team warms up).
        slower: a held choice is tried again when its recent steps take this many
            times the trial's figure.
        hold: seconds before the first re-trial; doubled each time a trial confirms
            the choice, up to ``max_hold``, and never so short that trials would cost
            more than ``overhead`` of the time.
        overhead: the share of time that trials at the slower counts may cost.
    """

    def __init__(
        self,
        candidates: list[int] | None = None,
        *,
        trial_steps: int = 5,
        slower: float = 1.5,
        hold: float = 2.0,
        max_hold: float = 16.0,
        overhead: float = 0.05,
    ) -> None:
        self.candidates = candidates or candidate_threads()
        self.trial_steps = trial_steps
        self.slower = slower
        self.first_hold, self.max_hold = hold, max_hold
        self.overhead = overhead
        self.hold = hold
        self.chosen = torch.get_num_threads()
        self.trials = 0
        #: Steps run at each thread count, for the record (metrics, benchmarks).
        self.steps_at: dict[int, int] = {}
        self._last: float | None = None
        self._queue: list[int] = []  # candidates still to time in this trial
        self._times: list[float] = []
        self._scores: dict[int, float] = {}
        self._recent: deque[float] = deque(maxlen=trial_steps)
        self._until = 0.0
        self._warmup = 0
        if len(self.candidates) > 1:
            self._start_trial(self.candidates)

    def _use(self, threads: int) -> None:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
            self._warmup = 1
        self._times = []

    def _start_trial(self, counts: list[int]) -> None:
        """Time each of ``counts`` for a few steps. The count in use is not run again
        when its recent steps are known: their median is its figure."""
        self.trials += 1
        current = torch.get_num_threads()
        self._scores = {current: statistics.median(self._recent)} if self._recent else {}
        # Without a figure for the count in use, time it first: no switch, no warm-up.
        self._queue = sorted(
            (n for n in counts if n not in self._scores), key=lambda n: n != current
        )
        if self._queue:
            self._use(self._queue[0])
        else:
            self._finish_trial()

    def _finish_trial(self) -> None:
        best = min(self._scores, key=self._scores.__getitem__)
        hold = min(2 * self.hold, self.max_hold) if best == self.chosen else self.first_hold
        # What the next trial will cost over staying: a warm-up and the timed steps at
        # each other count; hold long enough that this stays a small share of the time.
        cost = sum(
            (self.trial_steps + 1) * (score - self._scores[best]) for score in self._scores.values()
        )
        self.hold = min(max(hold, cost / self.overhead), self.max_hold)
        self.chosen = best
        self._use(best)
        self._recent.clear()
        self._until = time.perf_counter() + self.hold

    def tick(self) -> None:
        """Record that one step has finished; switch thread counts when the policy says."""
        now = time.perf_counter()
        last, self._last = self._last, now
        threads = torch.get_num_threads()
        self.steps_at[threads] = self.steps_at.get(threads, 0) + 1
        if last is None or len(self.candidates) < 2:
            return
        if self._warmup:
            self._warmup -= 1
            return
        step = now - last
        if self._queue:  # in a trial
            self._times.append(step)
            # A count twice as slow as the best timed so far is out after one step:
            # on a busy machine that is every count but one, at three times the cost.
            clearly_worse = bool(self._scores) and step > 2 * min(self._scores.values())
            if clearly_worse or len(self._times) >= self.trial_steps:
                self._scores[self._queue.pop(0)] = statistics.median(self._times)
                if self._queue:
                    self._use(self._queue[0])
                else:
                    self._finish_trial()
            return
        self._recent.append(step)
        if len(self._recent) < self.trial_steps:
            return
        recent = statistics.median(self._recent)
        if recent > self.slower * self._scores[self.chosen]:
            # Slower steps mean more load: only fewer threads can help.
            fewer = [n for n in self.candidates if n < self.chosen]
            if fewer:
                self._start_trial(fewer)
            else:
                self._scores[self.chosen] = recent  # already the fewest: a slower machine
        elif now >= self._until:
            # The load may have left: try the other counts against the one in use.
            self._start_trial(self.candidates)

    def pause(self) -> None:
        """Forget the time since the last step (call before work that is not a step,
        such as a validation pass, so that it is not counted as one)."""
        self._last = None
