"""The thread policy picks the fastest count, and picks again when the load changes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from cnnlab.cli import main
from cnnlab.speed import threads
from cnnlab.speed.threads import ThreadPolicy, candidate_threads


class Clock:
    """A fake ``perf_counter`` that a simulated step advances by its cost."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(threads.time, "perf_counter", c)
    return c


def run(policy: ThreadPolicy, clock: Clock, cost: Callable[[int], float], steps: int) -> list[int]:
    """Simulate ``steps`` steps, each costing ``cost(threads)`` seconds; the counts used."""
    used = []
    for _ in range(steps):
        n = torch.get_num_threads()
        used.append(n)
        clock.now += cost(n)
        policy.tick()
    return used


IDLE = {2: 0.010, 1: 0.016}.__getitem__  # two threads faster
BUSY = {2: 0.040, 1: 0.012}.__getitem__  # a busy core: two threads wait for each other


def test_candidates() -> None:
    assert candidate_threads(1) == [1]
    assert candidate_threads(2) == [2, 1]
    assert candidate_threads(8) == [8, 4, 1]


@pytest.mark.parametrize(("cost", "best"), [(IDLE, 2), (BUSY, 1)])
def test_a_trial_picks_the_faster_count(clock: Clock, cost: Callable, best: int) -> None:
    torch.set_num_threads(2)
    policy = ThreadPolicy([2, 1])
    used = run(policy, clock, cost, 40)
    assert policy.chosen == best
    assert used[-10:] == [best] * 10
    assert policy.trials == 1


def test_load_arriving_is_noticed_within_a_few_steps(clock: Clock) -> None:
    torch.set_num_threads(2)
    policy = ThreadPolicy([2, 1], hold=100.0, max_hold=100.0)
    run(policy, clock, IDLE, 30)
    assert policy.chosen == 2
    used = run(policy, clock, BUSY, 30)
    assert policy.chosen == 1 and policy.trials == 2
    assert used.index(1) <= 8  # five slow steps, then the trial moves to one thread


def test_load_leaving_is_noticed_at_the_next_hold(clock: Clock) -> None:
    torch.set_num_threads(2)
    policy = ThreadPolicy([2, 1], hold=1.0, max_hold=1.0)
    run(policy, clock, BUSY, 30)
    assert policy.chosen == 1
    run(policy, clock, IDLE, 200)  # 200 steps of 16 ms: past the 1 s hold
    assert policy.chosen == 2


def test_confirmed_choices_hold_longer(clock: Clock) -> None:
    torch.set_num_threads(2)
    policy = ThreadPolicy([2, 1], hold=1.0, max_hold=4.0)
    run(policy, clock, IDLE, 2000)  # 20 s of steady load
    assert policy.hold == 4.0
    assert policy.trials <= 8  # 1 + 2 + 4 + 4 + ... s between trials, not one a second


def test_one_candidate_never_switches(clock: Clock) -> None:
    torch.set_num_threads(1)
    policy = ThreadPolicy([1])
    assert run(policy, clock, IDLE, 20) == [1] * 20 and policy.trials == 0


def test_threads_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "default auto" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--threads", "0", "--model", "seed000-cnn"])
    assert exit_.value.code == 2
    assert "--threads: must be at least 1, got 0" in capsys.readouterr().err


def test_set_threads_modes() -> None:
    threads.set_threads(1)
    assert torch.get_num_threads() == 1
    assert threads.policy_for(torch.device("cpu")) is None
    threads.set_threads("auto")
    assert isinstance(threads.policy_for(torch.device("cpu")), ThreadPolicy)
    assert threads.policy_for(torch.device("meta")) is None
    with pytest.raises(ValueError):
        threads.set_threads(0)


def test_trainer_ticks_the_policy_once_a_step() -> None:
    from cnnlab.data import ImageData
    from cnnlab.models import create_model
    from cnnlab.train import Trainer

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (320, 1, 28, 28), dtype=torch.uint8, generator=g)
    data = ImageData(
        images, torch.randint(0, 10, (320,), generator=g), tuple("0123456789"), "x", "train"
    )
    threads.set_threads("auto")
    trainer = Trainer(
        create_model("seed004-lenet-max", in_channels=1, num_classes=10), progress=False
    )
    trainer.fit(data, epochs=2, batch_size=32)
    assert trainer.threads is not None
    assert sum(trainer.threads.steps_at.values()) == trainer.step == 20


def test_long_predictions_follow_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnlab.models import create_model
    from cnnlab.predict import Predictor

    ticks: list[int] = []
    monkeypatch.setattr(ThreadPolicy, "tick", lambda self: ticks.append(1))
    torch.manual_seed(0)
    predictor = Predictor(create_model("seed004-lenet-max", in_channels=1, num_classes=10))
    images = torch.randint(0, 256, (16, 28, 28), dtype=torch.uint8)
    fixed = predictor.probabilities(images, batch_size=2)
    assert ticks == []
    threads.set_threads("auto")
    auto = predictor.probabilities(images, batch_size=2)
    assert len(ticks) == 8
    torch.testing.assert_close(auto, fixed)
    predictor.probabilities(images, batch_size=4)  # 4 batches: too few to time
    assert len(ticks) == 8


def test_more_load_at_one_thread_tries_nothing(clock: Clock) -> None:
    """Slower steps on one thread mean more load: more threads cannot help, so no trial
    runs them (a trial at two threads on a busy machine costs three times a step)."""
    torch.set_num_threads(2)
    policy = ThreadPolicy([2, 1], hold=100.0, max_hold=100.0)
    run(policy, clock, BUSY, 30)
    assert policy.chosen == 1 and policy.trials == 1
    used = run(policy, clock, lambda n: 3 * BUSY(n), 50)
    assert used == [1] * 50 and policy.trials == 1


def test_trials_on_a_busy_machine_stay_cheap(clock: Clock) -> None:
    """A count twice as slow is dropped after one timed step, and holds grow until the
    trials cost under 5% of the time."""
    torch.set_num_threads(2)
    policy = ThreadPolicy([2, 1], hold=0.5, max_hold=16.0)
    used = run(policy, clock, BUSY, 5000)  # a minute at one thread
    at_two = used[10:].count(2)  # after the first trial
    retrials = policy.trials - 1
    assert retrials >= 3
    assert at_two <= 2 * retrials  # a warm-up and one timed step each
    extra = at_two * (BUSY(2) - BUSY(1))
    assert extra / clock.now < 0.05
