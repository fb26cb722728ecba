"""The epoch progress bar: redraws at most ~10 times a second, always at the end."""

from __future__ import annotations

import io

from cnnlab.train.progress import ProgressBar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_redraws_are_throttled_but_the_last_step_always_draws() -> None:
    out = FakeTerminal()
    bar = ProgressBar(100, 1, 3, stream=out)
    assert bar.due(1)
    bar.update(1, {"loss": 1.0})
    assert not bar.due(2)  # just drawn
    bar.update(2, {"loss": 0.5})
    assert "2/100" not in out.getvalue()
    assert bar.due(100)
    bar.update(100, {"loss": 0.25})
    assert "100/100" in out.getvalue() and "0.2500" in out.getvalue()


def test_nothing_is_due_off_a_terminal() -> None:
    out = io.StringIO()
    bar = ProgressBar(10, 1, 1, stream=out)
    assert not bar.due(10)
    bar.update(10, {"loss": 1.0})
    assert out.getvalue() == ""
