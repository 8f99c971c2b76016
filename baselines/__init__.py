"""The paper's baselines: multi-stack B-spline interpolation and super-resolution reconstruction.

Use ``baselines.bspline.bspline`` and ``baselines.srr.srr`` (the package does not re-export them, so
that ``baselines.bspline`` and ``baselines.srr`` stay the modules).
"""
