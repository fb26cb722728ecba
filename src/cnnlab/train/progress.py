"""A Keras-style progress bar that does not flood logs.

On a terminal it redraws one line per epoch (at most ~10 times a second); when
output goes to a file or pipe it prints a single line at the end of each epoch.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _fmt_metrics(logs: dict[str, Any]) -> str:
    parts = []
    for key, value in logs.items():
        if isinstance(value, float):
            parts.append(f"{key}: {value:.4f}")
    return " - ".join(parts)


class ProgressBar:
    """Show progress through ``total`` steps of one epoch, then a summary line."""

    def __init__(
        self,
        total: int,
        epoch: int,
        epochs: int,
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.last_draw = 0.0
        self.prefix = f"Epoch {epoch}/{epochs}"
        if self.live:
            self.stream.write(self.prefix + "\n")

    def due(self, step: int) -> bool:
        """Whether :meth:`update` would redraw now: the caller can skip computing the
        metrics (which costs tensor operations every step) when it would not."""
        return self.live and (step >= self.total or time.perf_counter() - self.last_draw >= 0.1)

    def update(self, step: int, logs: dict[str, Any]) -> None:
        """Record that ``step`` steps are done; redraw if on a terminal."""
        if not self.due(step):
            return
        now = time.perf_counter()
        self.last_draw = now
        width = 30
        done = int(width * step / max(1, self.total))
        bar = "=" * max(0, done - 1) + (">" if done < width else "=") + "." * (width - done)
        elapsed = now - self.start
        eta = elapsed / max(1, step) * (self.total - step)
        self.stream.write(
            f"\r{step}/{self.total} [{bar}] - ETA: {eta:.0f}s - {_fmt_metrics(logs)}\033[K"
        )
        self.stream.flush()

    def close(self, logs: dict[str, Any]) -> None:
        """Print the epoch's summary line."""
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        per_step = 1000 * elapsed / max(1, self.total)
        line = f"{self.total}/{self.total} - {elapsed:.1f}s {per_step:.0f}ms/step - {_fmt_metrics(logs)}"
        if self.live:
            self.stream.write(f"\r{line}\033[K\n")
        else:
            self.stream.write(f"{self.prefix} - {line}\n")
        self.stream.flush()
