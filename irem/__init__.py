"""IREM: implicit neural representations for multi-stack MRI super-resolution (Wu et al. 2021).

The package, in the order data flows through it (the baselines live in ``baselines/``):

- ``data``: ground truths (the embedded MNI152 template, the synthetic cohort, a phantom).
- ``acquisition``: LR stacks and their geometry (simulation, registration, DICOM, pre-processing).
- ``models``: the paper's Fourier-feature MLP, the grid INR, their numeric precision.
- ``training``: config, trainer, start image, memory estimate, sampling a trained model.
- ``evaluation``: PSNR/SSIM, paired statistics, the tuning choice rule.
- ``report``: tables, figures and method labels of the benchmark.
- ``cli``: the ``irem`` command, one module per subcommand; ``pipeline`` holds the steps the
  reconstruction subcommands share, ``layout`` every path the workflow writes.
"""

__version__ = "0.1.0"
