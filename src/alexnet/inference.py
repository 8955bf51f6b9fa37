"""A trained network ready to use: classify images (§6, Figure 4) and embed them (§6.1).

`load(path)` reads a run folder (its best.pt), best.pt, last.pt or a .safetensors export and
gives a `TrainedNetwork`: the model on a device, the checkpoint's own test-time preprocessing
(`eval_transform`: §2 shorter side to the recipe's image size, mean image subtracted, centre crop
or ten crops (§4.1), divided by the channel std when the recipe standardises) and its class
names. `predict`, `probabilities`
and `embed` take paths, PIL images or uint8 tensors (3, H, W) and run them in batches;
`predict_files` does the same for many files with loader workers, skipping an unreadable file
with a warning that names it, as training does; `write_predictions_csv` and `_json` keep the
results, one row per image.

    from alexnet import load
    net = load("runs/digits-20260101-120000")
    net.predict(["a.jpg"], top=5)  # [Prediction(classes=[...], probabilities=[...])]
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F
from tqdm import tqdm

from alexnet import checkpoint
from alexnet.data import (
    DataError,
    DataStats,
    FileSource,
    ImageSource,
    TransformedDataset,
    eval_transform,
    make_loader,
)
from alexnet.data.dataset import FileEntry
from alexnet.data.decode import read_rgb, to_rgb
from alexnet.data.transforms import Pipeline
from alexnet.device import Placement
from alexnet.evaluate import class_probabilities, images_per_batch
from alexnet.export import read_safetensors
from alexnet.files import write_text_atomically

ImageLike = str | os.PathLike | Image.Image | torch.Tensor  # one image, as predict takes it


NAMES = ("class", "probability")  # the CSV's column pair for each of the top classes


class Prediction(NamedTuple):
    """One image's most probable classes, most probable first, with their probabilities."""

    classes: list[str]
    probabilities: list[float]


def load(
    path: str | os.PathLike, *, device: str = "auto", batch_size: int | None = None
) -> TrainedNetwork:
    """The network saved at `path`: a run folder (its best.pt), best.pt, last.pt or a
    .safetensors file that `alexnet export` wrote.

    device: auto (CUDA when there is one, else the CPU), cpu, cuda or cuda:N. batch_size: images
    per forward pass (default: the batch size the network was trained with).
    """
    return TrainedNetwork(read_saved_network(Path(path)), device=device, batch_size=batch_size)


def read_saved_network(path: Path) -> dict[str, Any]:
    """The checkpoint dict behind `path`: a run folder, a .pt checkpoint or a .safetensors file
    that `alexnet export` wrote; the one place where another saved format would join."""
    if path.is_dir() or path.suffix == ".pt":
        return checkpoint.load(path, prefer="best.pt")
    if not path.exists():
        raise checkpoint.CheckpointError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    raise checkpoint.CheckpointError(
        f"{path} is neither a run folder, a .pt checkpoint (best.pt, last.pt) nor a .safetensors "
        "export"
    )


class TrainedNetwork:
    """A checkpoint's network, preprocessing and class names, ready to classify and embed."""

    def __init__(
        self, state: dict[str, Any], *, device: str = "auto", batch_size: int | None = None
    ):
        recipe = checkpoint.recipe_of(state)
        stats = DataStats.from_state_dict(state["data_stats"])
        self.path = Path(state["path"])
        self.classes: list[str] = list(state["classes"])  # index = the network's output
        self.placement = Placement.for_run(recipe.run, device)
        self.model = self.placement.model(checkpoint.build_model(state)).eval()  # no dropout
        self.transform = eval_transform(recipe.data, stats)  # -> (3, crop, crop)
        self.ten_crop_transform = eval_transform(recipe.data, stats, ten_crop=True)  # (10, 3, ...)
        self.batch_size = batch_size or recipe.optim.batch_size
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def predict(
        self, images: ImageLike | Sequence[ImageLike], *, top: int = 5, ten_crop: bool = False
    ) -> list[Prediction]:
        """The `top` most probable classes of each image (capped at the number of classes)."""
        _check_top(top)
        return [self._top(row, top) for row in self.probabilities(images, ten_crop=ten_crop)]

    def probabilities(
        self, images: ImageLike | Sequence[ImageLike], *, ten_crop: bool = False
    ) -> torch.Tensor:
        """Softmax outputs (N, C) on the CPU; with ten_crop, the mean over ten crops (§4.1)."""
        dataset = _Images(images, self._transform(ten_crop))
        batches = self._batches(dataset, self._batch_size(ten_crop), self._classify)
        return torch.cat([rows for _, rows in batches])

    def embed(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """fc7 activations (N, 4096) of the centre crops, on the CPU: the features by which §6.1
        finds an image's nearest neighbours."""
        batches = self._batches(_Images(images, self.transform), self.batch_size, self._fc7)
        return torch.cat([rows for _, rows in batches])

    def embed_source(
        self, source: ImageSource, *, workers: int = 0, progress: bool = False
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """fc7 vectors of a data set's images in order, batch by batch: (positions, (B, 4096));
        an unreadable image is left out of its batch (§6.1: the features retrieval searches)."""
        dataset = _Positioned(TransformedDataset(source, self.transform))
        return self._batches(
            dataset, self.batch_size, self._fc7, workers=workers, progress=progress
        )

    def predict_files(
        self,
        paths: Sequence[str],
        *,
        top: int = 5,
        ten_crop: bool = False,
        workers: int = -1,
        progress: bool = False,
    ) -> Iterator[tuple[str, Prediction | None]]:
        """(path, prediction) for each file in order; None for a file that cannot be read.

        workers: decoding processes (-1: one per core; a single batch is decoded in
        this process). progress: a bar when there is more than one batch.
        """
        _check_top(top)
        # Labelled by position, so that each batch says which files it holds.
        entries = [_file_entry(path, index) for index, path in enumerate(paths)]
        source = FileSource("images to predict", self.classes, entries)
        dataset = TransformedDataset(source, self._transform(ten_crop))
        batch_size = self._batch_size(ten_crop)
        several = len(paths) > batch_size
        batches = self._batches(
            dataset,
            batch_size,
            self._classify,
            workers=workers if several else 0,
            progress=progress and several,
        )
        next_index = 0
        for indices, rows in batches:
            for index, row in zip(indices, rows, strict=True):
                yield from ((paths[i], None) for i in range(next_index, index))
                yield paths[index], self._top(row, top)
                next_index = index + 1
        yield from ((paths[i], None) for i in range(next_index, len(paths)))

    def _transform(self, ten_crop: bool) -> Pipeline:
        return self.ten_crop_transform if ten_crop else self.transform

    def _batch_size(self, ten_crop: bool) -> int:
        return images_per_batch(self.batch_size, ten_crop)

    @torch.no_grad()
    def _batches(
        self,
        dataset: Dataset,
        batch_size: int,
        forward: Callable[[torch.Tensor], torch.Tensor],
        *,
        workers: int = 0,
        progress: bool = False,
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """(positions, forward(images) on the CPU) for each batch holding a readable image."""
        if len(dataset) == 0:
            raise ValueError("no images given")
        loader = make_loader(
            dataset, batch_size, train=False, workers=workers, device=self.placement.device
        )
        with tqdm(total=len(dataset), desc="predict", unit="img", disable=not progress) as bar:
            for batch, positions, skipped in loader:
                bar.update(len(positions) + skipped)
                if len(positions):
                    yield positions.tolist(), forward(batch).cpu()

    def _classify(self, images: torch.Tensor) -> torch.Tensor:
        return class_probabilities(self.model, images, self.placement)  # (B, C)

    def _fc7(self, images: torch.Tensor) -> torch.Tensor:
        with self.placement.autocast():
            return self.model.embed(self.placement.images(images)).float()  # (B, 4096)

    def _top(self, probabilities: torch.Tensor, k: int) -> Prediction:
        best = probabilities.topk(min(k, len(self.classes)))
        return Prediction([self.classes[i] for i in best.indices.tolist()], best.values.tolist())


class _Images(Dataset):
    """Paths, PIL images or uint8 tensors (3, H, W), transformed: item -> (tensor, position)."""

    def __init__(self, images: ImageLike | Sequence[ImageLike], transform: Pipeline):
        single = isinstance(images, (str, os.PathLike, Image.Image)) or (
            isinstance(images, torch.Tensor) and images.dim() == 3
        )
        self.images = [images] if single else list(images)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        return self.transform(_as_rgb(self.images[position], self.transform.image_size)), position


class _Positioned(Dataset):
    """A transformed source whose items carry their position instead of their label."""

    def __init__(self, dataset: TransformedDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int] | None:
        item = self.dataset[position]
        return None if item is None else (item[0], position)


def _as_rgb(image: ImageLike, decode_size: int) -> Image.Image:
    """An 8-bit RGB PIL image; a JPEG path may decode at reduced size (see read_rgb)."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"expected a uint8 tensor (3, H, W), got {image.dtype} {tuple(image.shape)}"
            )
        return F.to_pil_image(image)
    try:
        return read_rgb(image, decode_size)
    except Exception as error:  # Pillow raises many kinds for a bad file
        raise DataError(f"cannot read image {image}: {type(error).__name__}: {error}") from None


def _file_entry(path: str, position: int) -> FileEntry:
    stat = os.stat(path)
    return FileEntry(path, position, stat.st_size, stat.st_mtime_ns)


def _check_top(top: int) -> None:
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")


def write_predictions_csv(path: str | os.PathLike, rows: Sequence[tuple[str, Prediction]]) -> None:
    """One line per image: path, class_1, probability_1, ..., class_K, probability_K; written
    atomically. Skipped files have no line (the warnings named them)."""
    top = max(len(prediction.classes) for _, prediction in rows)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", *(f"{name}_{k}" for k in range(1, top + 1) for name in NAMES)])
    for image, prediction in rows:
        cells = [image]
        for name, probability in zip(*prediction, strict=True):
            cells += [name, f"{probability:.6f}"]
        writer.writerow(cells)
    write_text_atomically(path, text.getvalue())


def write_predictions_json(
    path: str | os.PathLike, rows: Sequence[tuple[str, Prediction]], skipped: Sequence[str]
) -> None:
    """{"predictions": [{"path", "classes", "probabilities"}, ...], "skipped": [path, ...]},
    written atomically."""
    predictions = [{"path": image, **prediction._asdict()} for image, prediction in rows]
    report = {"predictions": predictions, "skipped": list(skipped)}
    write_text_atomically(path, json.dumps(report, indent=1) + "\n")
