"""Training progress on seconds under a time budget, else on steps, with the loss: a tqdm bar on a
terminal, else (a Snakemake or Slurm log) a plain line every ``interval`` training seconds."""

from __future__ import annotations

import math
import sys
from contextlib import AbstractContextManager
from typing import TextIO

from tqdm import tqdm

PLAIN_INTERVAL = 10.0  # training seconds between two plain lines
POSTFIX_EVERY = 50  # steps between two refreshes of the bar's postfix
DESC = "IREM"


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def plain_line(
    desc: str, steps: int, seconds: float, loss: float, budget: float | None, total_steps: int
) -> str:
    """One progress line: position against the bound (seconds or steps), the other one, the loss."""
    loss_text = f"loss {loss:.4g}" if math.isfinite(loss) else "loss -"
    if budget is not None:
        pct = 100.0 * min(seconds / budget, 1.0)
        return f"{desc}: {seconds:.0f}/{budget:.0f} s ({pct:.0f}%), {steps} steps, {loss_text}"
    pct = 100.0 * min(steps / max(total_steps, 1), 1.0)
    return f"{desc}: step {steps}/{total_steps} ({pct:.0f}%), {seconds:.0f} s, {loss_text}"


class Progress(AbstractContextManager):
    """Progress of a run bounded by ``budget`` seconds (None: ``total_steps``) on ``stream``."""

    def __init__(
        self,
        total_steps: int,
        budget: float | None = None,
        *,
        start_steps: int = 0,
        start_seconds: float = 0.0,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = PLAIN_INTERVAL,
    ):
        self.total_steps, self.budget, self.interval = total_steps, budget, interval
        self.stream = stream if stream is not None else sys.stderr
        self.plain = enabled and not _is_tty(self.stream)
        self._next_line = start_seconds + interval
        self._state = self._printed = (start_steps, start_seconds, math.nan)
        bar = enabled and not self.plain
        self.bar = self._make_bar(start_steps, start_seconds) if bar else None

    def _make_bar(self, start_steps: int, start_seconds: float) -> tqdm:
        common = {"dynamic_ncols": True, "desc": DESC, "file": self.stream}
        if self.budget is None:
            return tqdm(total=self.total_steps, initial=start_steps, unit="step", **common)
        fmt = "{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
        return tqdm(total=self.budget, initial=start_seconds, unit="s", bar_format=fmt, **common)

    def update(self, steps: int, seconds: float, loss: float) -> None:
        """Record the state after a step: total steps, training seconds, (smoothed) loss."""
        self._state = (steps, seconds, loss)
        if self.bar is not None:
            position = steps if self.budget is None else min(seconds, self.budget)
            self.bar.update(position - self.bar.n)
            if steps % POSTFIX_EVERY == 0:
                steps_post = {} if self.budget is None else {"steps": str(steps)}
                self.bar.set_postfix({"loss": f"{loss:.3g}", **steps_post}, refresh=False)
        elif self.plain and seconds >= self._next_line:
            self._write_line()
            self._next_line = seconds + self.interval

    def _write_line(self) -> None:
        steps, seconds, loss = self._state
        line = plain_line(DESC, steps, seconds, loss, self.budget, self.total_steps)
        print(line, file=self.stream, flush=True)
        self._printed = self._state

    def close(self) -> None:
        """Close the bar, or write the last plain line if the run moved since the previous one."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.plain and self._state[:2] != self._printed[:2]:
            self._write_line()
        self.plain = False

    def __exit__(self, *exc: object) -> None:
        self.close()
