"""Checkpoint files: atomic save, safe load, and the checks a loaded one must pass.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so that loading uses
`torch.load(weights_only=True)` and never unpickles arbitrary objects. It is written to a
temporary file in the same folder and renamed over the old one, so a crash or a kill mid-write
leaves the previous checkpoint intact. What a training checkpoint holds, and how a run is
restored from it, is run/state.py's.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import torch

from alexnet.data.sources.dataset import DataError, same_class_names
from alexnet.data.stats import DataStats
from alexnet.errors import UserError
from alexnet.files import write_atomically
from alexnet.model import AlexNet
from alexnet.recipe import Recipe, RecipeError
from alexnet.run.checkpoint_file import checkpoint_file


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, or holds another network; names the file."""


def save_atomically(state: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename it over `path`."""
    write_atomically(path, lambda file: save(state, file))


def save(state: dict[str, Any], file: BinaryIO) -> None:
    """torch.save without the zip entries' CRC-32: torch.load never checks it, and computing it
    was most of the time to write this net's 456 MB checkpoint, every epoch
    (docs/measurements.md, "Checkpoints"). The atomic rename is what keeps a checkpoint whole."""
    serialization = getattr(torch.utils, "serialization", None)  # torch >= 2.6
    writer = _WriteErrorsKept(file)
    try:
        if serialization is None:
            torch.save(state, writer)
            return
        with serialization.config.patch({"save.compute_crc32": False}):
            torch.save(state, writer)
    except RuntimeError:
        if writer.error is None:
            raise
        raise writer.error from None


class _WriteErrorsKept:
    """`file`, keeping the OSError of a failed write (a full disk): torch's zip writer raises
    a RuntimeError of its own in its place, which names neither the file nor the cause."""

    def __init__(self, file: BinaryIO):
        self.file, self.error = file, None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def link_atomically(source: Path, path: Path) -> None:
    """Make `path` the same file as `source` (a hard link, else a copy), replacing it atomically.

    `save_atomically` always writes a new file, so a later save of `source` leaves `path` as it is.
    """
    temporary = path.with_name(f".{path.name}.link.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, path)


REQUIRED_KEYS = ("model", "recipe", "classes", "epoch", "data_stats")


def load(path: Path | str, *, prefer: str = "last.pt") -> dict[str, Any]:
    """Read a checkpoint file without unpickling objects; `state["path"]` says which file.

    A run folder means its `prefer` checkpoint, or its `last.pt` (checkpoint_file.py).
    """
    path = checkpoint_file(path, prefer)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    with warnings.catch_warnings():  # torch's advice to unpickle anyway is not for our users
        warnings.simplefilter("ignore")
        try:
            state = _read(path)
        except Exception as error:  # torch raises many kinds for a file it did not write
            raise CheckpointError(_unreadable(path, error)) from None
    return checked(state, path)


def _read(path: Path) -> Any:
    """torch.load, the tensors mapped from the file rather than copied (a file written by an old
    torch.save cannot be mapped: read whole): a checkpoint just written is still in the page
    cache, where mapping it is far cheaper than copying 456 MB into fresh memory
    (docs/measurements.md, "Checkpoints"). The mapping is private, and a checkpoint is replaced
    by a rename, never rewritten in place."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def checked(state: Any, path: Path | str) -> dict[str, Any]:
    """`state` with `state["path"]` set, once every value a run, an evaluation or a prediction
    reads from it has been checked: the one validation step of a checkpoint, also for networks
    read from other formats (export.py). Anything wrong is one CheckpointError naming the file
    and the field, before any work starts."""
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path} is not an alexnet checkpoint (no {', '.join(missing)})")
    state["path"] = str(path)
    try:
        recipe = recipe_of(state)
    except (RecipeError, TypeError, AttributeError, ValueError) as error:
        raise CheckpointError(f"{path} holds a recipe this version cannot read: {error}") from None
    classes, model = state["classes"], state["model"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(f"{path}: classes is not a list of class names")
    same = same_class_names(classes)
    if same:
        raise CheckpointError(f"{path}: classes holds one name twice: {same[0]!r}, {same[1]!r}")
    if not isinstance(model, dict) or not all(isinstance(t, torch.Tensor) for t in model.values()):
        raise CheckpointError(f"{path}: model is not a dictionary of tensors")
    for key in ("epoch", "step"):
        value = state.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"{path}: {key}={value!r} is not a whole number >= 0")
    try:
        stats = DataStats.from_state_dict(state["data_stats"], str(path))
    except DataError as error:
        raise CheckpointError(str(error)) from None
    if stats.image_size != recipe.data.image_size:
        raise CheckpointError(
            f"{path}: data_stats are of {stats.image_size} px images, its recipe's "
            f"data.image_size is {recipe.data.image_size}"
        )
    return state


def _unreadable(path: Path, error: Exception) -> str:
    """One line for a file torch.load(weights_only=True) gave up on (its message is a page)."""
    if isinstance(error, pickle.UnpicklingError) and "GLOBAL" in str(error).upper():
        return (
            f"{path} is not an alexnet checkpoint and was refused: it holds objects other than "
            "tensors and plain values (nothing in it was run)"
        )
    return f"{path} is not a readable checkpoint (not written by torch.save, or cut short)"


def recipe_of(state: dict[str, Any]) -> Recipe:
    return Recipe.from_dict(state["recipe"])


def ensure_variant(state: dict[str, Any], variant: str) -> None:
    """Refuse a checkpoint of another variant, naming both."""
    saved = state["recipe"]["model"]["variant"]
    if variant != saved:
        raise CheckpointError(
            f"{state['path']} holds a {saved!r} AlexNet, not the {variant!r} variant asked for"
        )


def ensure_classes(state: dict[str, Any], classes: list[str], source: str) -> None:
    """Refuse data whose classes are not the ones the checkpoint was trained on."""
    if list(classes) != list(state["classes"]):
        raise DataError(
            f"{source} has {len(classes)} classes that do not match the "
            f"{len(state['classes'])} classes {state['path']} was trained on"
        )


def build_model(state: dict[str, Any], recipe: Recipe | None = None) -> AlexNet:
    """The network a checkpoint was trained as (or as `recipe` says), with its weights loaded."""
    recipe = recipe or recipe_of(state)
    ensure_variant(state, recipe.model.variant)
    model = AlexNet(len(state["classes"]), **dataclasses.asdict(recipe.model), device="meta")
    weights = {name: tensor.float() for name, tensor in state["model"].items()}  # as a copy
    # into the net's float32 parameters made them; float32 ones are used as they are
    try:
        model.load_state_dict(weights, assign=True)
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{state['path']} does not fit this network: {reason}") from None
    return model
