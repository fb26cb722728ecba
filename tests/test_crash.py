"""Training killed with SIGKILL at random moments, and inside saves, always resumes to the
weights of an uninterrupted run, and leaves no temporary file behind.

Each kill is either timed (a random moment after the process starts: importing, loading
data, training, writing) or placed inside a save with ``CNNLAB_CRASH_AT`` (see
:func:`cnnlab.atomic.crash_point`). After a kill the next process resumes the run
(``--resume``), or trains it again when it was killed before its config was written;
a chain ends when a process finishes, and its weights are compared byte for byte.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fuzzing import cases

pytestmark = pytest.mark.crash

SAVE_POINTS = ("write", "pending", "rename", "replace")
SEED = 20261129


@dataclass
class Tally:
    """What the crash runs did, for the final assertions and the report."""

    kills: int = 0
    save_kills: int = 0
    chains: int = 0
    processes: int = 0
    moments: list[str] = field(default_factory=list)


def _command(data: Path, out: Path, resume: bool) -> list[str]:
    base = [sys.executable, "-m", "cnnlab", "train", "--quiet", "--threads", "1"]
    base += ["--data-dir", str(data)]
    if resume:
        return [*base, "--resume", str(out)]
    return [*base, "--model", "seed004-lenet-max", "--dataset", "mnist", "--epochs", "2",
            "--batch-size", "64", "--seed", "3", "--out", str(out)]  # fmt: skip


def _env(point: str | None) -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.pop("CNNLAB_CRASH_AT", None)
    if point:
        env["CNNLAB_CRASH_AT"] = point
    return env


def _launch(data: Path, out: Path, point: str | None) -> subprocess.Popen[bytes]:
    resume = (out / "config.json").exists()
    return subprocess.Popen(
        _command(data, out, resume),
        env=_env(point),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err.decode(errors="replace")


@pytest.fixture(scope="module")
def reference(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, float]:
    """The weights of an uninterrupted run, and how long its process took."""
    out = tmp_path_factory.mktemp("crash") / "straight"
    start = time.perf_counter()
    rc, err = _finish(_launch(tiny_mnist, out, None))
    assert rc == 0, err
    return (out / "weights.safetensors").read_bytes(), time.perf_counter() - start


def _plan(rng: random.Random, kills: int, save_kills: int) -> list[str | float]:
    """The kills to make, shuffled: save points as ``POINT:N``, timed ones as a fraction
    of an uninterrupted run's time."""
    plan: list[str | float] = [
        f"{rng.choice(SAVE_POINTS)}:{rng.randint(1, 3)}" for _ in range(save_kills)
    ]
    plan += [rng.uniform(0.25, 1.0) for _ in range(kills - save_kills)]
    rng.shuffle(plan)
    return plan


def test_killed_training_resumes_to_the_uninterrupted_weights(
    tiny_mnist: Path, tmp_path: Path, reference: tuple[bytes, float]
) -> None:
    weights, seconds = reference
    rng = random.Random(SEED)
    plan = _plan(rng, cases(2, 24), cases(1, 10))
    tally = Tally()
    while plan:
        tally.chains += 1
        out = tmp_path / f"chain{tally.chains}"
        while True:  # one chain: kill, resume, ... until a process finishes the run
            kill = plan.pop() if plan else None
            proc = _launch(tiny_mnist, out, kill if isinstance(kill, str) else None)
            tally.processes += 1
            if isinstance(kill, float):
                try:
                    proc.wait(timeout=kill * seconds)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
            rc, err = _finish(proc)
            if rc == -signal.SIGKILL:
                tally.kills += 1
                tally.save_kills += isinstance(kill, str)
                tally.moments.append(str(kill))
                continue
            finished = rc == 0 or (rc == 2 and "has finished" in err)
            assert finished, f"exit {rc} after kill {kill!r}: {err[-2000:]}"
            if kill is not None:  # the run ended before this moment: keep it for the next run
                plan.append(kill * 0.6 if isinstance(kill, float) else kill)
            break
        assert (out / "weights.safetensors").read_bytes() == weights, f"chain {tally.chains}"
        assert (out / "metrics.json").exists()
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
        if tally.chains > cases(4, 40):
            break  # every planned kill came too late, again and again
    print(
        f"\ncrash test: {tally.kills} kills ({tally.save_kills} inside saves) in "
        f"{tally.chains} runs, {tally.processes} processes; every run resumed to the "
        f"uninterrupted weights; moments {tally.moments}"
    )
    assert tally.kills >= cases(2, 20) and tally.save_kills >= cases(1, 5)
