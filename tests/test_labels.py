"""Method labels are derived from the method's command, and say what differs from the paper."""

from __future__ import annotations

import pytest

from irem.report.labels import fill, method_label

BASE = "irem reconstruct {stacks} -o {output} {geometry} --seed {seed} --device {device}"


def label(command: str, **entry: object) -> str:
    return method_label({"name": "m", "command": command, **entry})


def test_only_the_paper_settings_are_plain_irem() -> None:
    assert label(BASE) == "IREM"
    assert label(BASE + " --config paper") == "IREM"
    assert label(BASE + " --epochs 2000") == "IREM"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (" --time-budget 30 --set train.lr=1e-3", "IREM (paper network, 30 s CPU budget, lr 0.001)"),
        (" --epochs 6", "IREM (paper network, 6 epochs)"),
        (" --set model.fourier_dim=64", "IREM (paper network, 2L 64)"),
        (" --set model.sigma=4", "IREM (paper network, sigma 4)"),
    ],
)
def test_non_paper_runs_say_what_differs(extra: str, expected: str) -> None:
    got = label(BASE + extra)
    assert got == expected
    assert got != "IREM"


def test_gpu_budget_is_not_called_cpu() -> None:
    assert label(BASE + " --time-budget 30", device="cuda") == "IREM (paper network, 30 s budget)"


def test_grid_inr_and_baselines() -> None:
    fast = BASE + " --config fast --time-budget 60"
    assert label(fast) == "grid INR on SRR-TV (60 s CPU budget)"
    assert label(fast + " --set train.base=none") == "grid INR (60 s CPU budget)"
    assert label("irem baseline bspline {stacks} -o {output}") == "B-spline"
    srr = "irem baseline srr {stacks} -o {output} --psf box --regulariser tv"
    assert label(srr) == "SRR-TV (box PSF)"


def test_external_methods_take_their_label_or_name() -> None:
    assert label("python x.py {stacks} -o {output}") == "m"
    assert label("python x.py {stacks}", label="mine") == "mine"


def test_bad_commands_are_refused() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        fill("run {nonsense}")
    with pytest.raises(ValueError, match="not a valid irem command"):
        label("irem reconstruct --no-such-option")
