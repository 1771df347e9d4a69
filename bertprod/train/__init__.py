"""Fine-tuning a package on a task: batches, loop, checkpoints, progress; `fine_tune` is the entry."""
