"""Progress output: seconds under a time budget, steps under an epoch budget, a few plain lines
when the stream is not a terminal."""

from __future__ import annotations

import io
import itertools

import pytest

from irem.acquisition.simulate import simulate_stacks
from irem.training.config import load_config
from irem.training.progress import Progress, plain_line
from irem.training.train import train
from irem.volume import Volume

SMALL = {"model.width": 16, "model.fourier_dim": 16, "train.batch_size": 256, "train.lr": 1e-3}


class TTY(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_budgeted_run_to_a_log_file_stays_small(phantom: Volume) -> None:
    """A 20 s budget on a fake clock (0.05 s a step: 400 steps): one line every 10 s, not one per
    step or per bar refresh."""
    stacks = simulate_stacks(phantom, 4)
    cfg = load_config(overrides={**SMALL, "train.epochs": 1000, "train.time_budget": 20})
    ticks = itertools.count()
    log = io.StringIO()
    _, _, res = train(
        stacks, cfg, clock=lambda: 0.05 * next(ticks), progress=True, progress_stream=log
    )
    text = log.getvalue()
    lines = text.splitlines()
    assert res.stopped_by == "budget" and res.steps == 400
    assert len(text.encode()) < 5000
    # lines at 10 s and 20 s, then the last state when the run ends (if it moved since)
    assert 2 <= len(lines) <= 3, text
    assert all(line.startswith("IREM: ") and line.endswith(tuple("0123456789")) for line in lines)
    assert "/20 s" in lines[0] and "steps" in lines[0] and "\r" not in text
    assert lines[-1].startswith("IREM: 20/20 s (100%), 400 steps")


def test_plain_lines_follow_training_seconds_not_steps() -> None:
    out = io.StringIO()
    with Progress(1000, budget=None, stream=out, interval=10.0) as bar:
        for step in range(1, 1001):
            bar.update(step, step * 0.1, 0.5)  # 100 s of training
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # at 10, 20, ..., 100 s
    assert lines[0] == "IREM: step 100/1000 (10%), 10 s, loss 0.5"


def test_terminal_bar_runs_on_seconds_under_a_time_budget() -> None:
    out = TTY()
    bar = Progress(10**6, budget=120.0, stream=out)
    assert bar.bar is not None and bar.bar.total == 120.0  # not epochs x steps
    bar.update(50, 30.0, 0.25)
    assert bar.bar.n == pytest.approx(30.0)
    bar.close()
    assert "/120 s" in out.getvalue() and "steps=50" in out.getvalue()
    steps = Progress(500, budget=None, stream=TTY())
    assert steps.bar is not None and steps.bar.total == 500
    steps.close()


def test_disabled_progress_writes_nothing() -> None:
    out = io.StringIO()
    with Progress(10, budget=5.0, stream=out, enabled=False) as bar:
        bar.update(10, 100.0, 0.1)
    assert out.getvalue() == ""


def test_plain_line_formats() -> None:
    assert plain_line("IREM", 7, 61.2, float("nan"), 120.0, 100) == (
        "IREM: 61/120 s (51%), 7 steps, loss -"
    )
    assert plain_line("IREM", 150, 3.0, 1e-3, None, 100).startswith("IREM: step 150/100 (100%)")
