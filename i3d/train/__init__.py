"""Training: the step, the frozen-feature cache, checkpoints, the loop."""
