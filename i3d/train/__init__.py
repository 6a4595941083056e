"""Training: loss and step functions, the frozen-feature cache, checkpoints, the loop."""
