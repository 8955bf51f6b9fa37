"""A training run's life: its state and checkpoints (state.py, checkpoint.py), the run folder
and its files (folder.py, epoch_plots.py, tensorboard.py), and stopping on a signal
(preemption.py)."""
