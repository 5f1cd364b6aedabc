"""The training run: the fit loop, one step, augmentation, progress, checkpoints, interrupts, data-parallel steps."""
