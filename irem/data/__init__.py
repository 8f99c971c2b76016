"""Ground-truth volumes: the embedded MNI152 template, the synthetic cohort, a phantom."""
