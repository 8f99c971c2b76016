"""The paper's baselines, in the modules ``baselines.bspline`` and ``baselines.srr``."""
