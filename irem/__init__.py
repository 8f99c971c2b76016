"""IREM: implicit neural representations for multi-stack MRI super-resolution (Wu et al. 2021)."""

__version__ = "0.1.0"
