"""Training a model on LR stacks and sampling it: config, trainer, start image, memory."""
