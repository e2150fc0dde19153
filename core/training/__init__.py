"""The training engine: assembling a run, the step, the loop, checkpoints of its state."""
