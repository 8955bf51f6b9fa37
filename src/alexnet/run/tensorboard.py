"""TensorBoard, when the recipe asks for it (`run.tensorboard=true`, the tensorboard extra).

Once per epoch: the metrics of `metrics.jsonl` as scalars (train and validation loss and errors,
the learning rate ε of §5, images/s) and the conv1 kernels as an image, tower one above tower
two (§6.1, Figure 3), in `RUN_DIR/tensorboard/`. `open_board` fails with a RecipeError before
anything is written when TensorBoard is missing; when the recipe does not ask, it gives a board
that does nothing, so the epoch loop calls it unconditionally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alexnet.model import AlexNet
from alexnet.recipe import RecipeError
from alexnet.run.epoch_plots import kernel_grid

NOT_SCALARS = ("epoch",)  # record keys that are not plotted


class Board:
    """Writes one epoch's scalars and conv1 kernels; does nothing when `folder` is None."""

    def __init__(self, folder: Path | None, writer_class: Any = None):
        self.folder, self.writer_class, self.writer = folder, writer_class, None

    def log_epoch(self, record: dict[str, Any], model: AlexNet) -> None:
        if self.folder is None:
            return
        if self.writer is None:  # made on first use: the folder appears with the first epoch
            self.writer = self.writer_class(log_dir=str(self.folder))
        epoch = record["epoch"]
        for key, value in record.items():
            if key not in NOT_SCALARS:
                self.writer.add_scalar(key, value, epoch)
        grid = kernel_grid(model.learned_layers()["conv1"].weight, model.conv1_towers())
        self.writer.add_image("conv1", grid, epoch, dataformats="HWC")  # (H, W, 3) in [0, 1]
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def open_board(run_dir: Path, enabled: bool) -> Board:
    """A board writing to `run_dir/tensorboard` if enabled, else one that does nothing."""
    if not enabled:
        return Board(None)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RecipeError(
            "run.tensorboard=true needs TensorBoard: pip install 'alexnet[tensorboard]'"
        ) from None
    return Board(Path(run_dir) / "tensorboard", SummaryWriter)
