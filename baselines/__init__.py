"""The paper's baselines: ``baselines.bspline.bspline`` and ``baselines.srr.srr`` (not re-exported,
so that ``baselines.bspline`` and ``baselines.srr`` stay the modules)."""
