"""A trained network ready to use: classify images (§6, Figure 4) and embed them (§6.1).

`load(path)` reads a run folder (its best.pt), best.pt, last.pt or a .safetensors export and
gives a `TrainedNetwork`: the model on a device, the checkpoint's own test-time preprocessing
(`transform`: the batched arithmetic of data/batches.py, which training and evaluation use: §2
shorter side to the recipe's image size, mean image subtracted, centre crop or ten crops (§4.1),
divided by the channel std when the recipe standardises) and its class names. `predict`,
`probabilities` and `embed` take paths, PIL images or uint8 tensors (3, H, W) and run them in
batches;
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
from tqdm import tqdm

from alexnet.data import DataStats, FileSource, ImageSource, make_batches
from alexnet.data.batches import forward_batch_size, preprocess
from alexnet.data.loading.windows import ten_crop_views
from alexnet.data.sources.dataset import FileEntry
from alexnet.data.sources.given import GivenImages, ImageLike
from alexnet.evaluate import class_probabilities, images_per_batch
from alexnet.export import read_safetensors
from alexnet.files import write_text_atomically
from alexnet.placement import Placement
from alexnet.run import checkpoint

NAMES = ("class", "probability")  # the CSV's column pair for each of the top classes
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet evaluates such a cell


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
    per forward pass (default: 4× the batch it was trained with, data.batches.forward_batch_size).
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
        self.path = Path(state["path"])
        self.classes: list[str] = list(state["classes"])  # index = the network's output
        self.recipe = recipe.data  # the preprocessing the network was trained with (§2, §4.1)
        self.stats = DataStats.from_state_dict(state["data_stats"])
        self.views = ten_crop_views(self.recipe.image_size, self.recipe.crop_size)  # §4.1
        self.gpu_decode = recipe.run.gpu_decode  # off: the recipe's workaround for vision#9606
        self.placement = Placement.for_run(recipe.run, device)
        self.model = self.placement.model(checkpoint.build_model(state)).eval()  # no dropout
        self.batch_size = batch_size or forward_batch_size(recipe.optim.batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def transform(self, image: ImageLike, *, ten_crop: bool = False) -> torch.Tensor:
        """One image as the network sees it at test time, on the CPU: (3, crop, crop), or
        (10, 3, crop, crop) with ten_crop; a batch of one of the batched arithmetic."""
        return preprocess([image], self.recipe, self.stats, ten_crop=ten_crop)[0]

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
        batches = self._batches(GivenImages(images), self._classify, ten_crop=ten_crop)
        return torch.cat([rows for _, rows in batches])

    def embed(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """fc7 activations (N, 4096) of the centre crops, on the CPU: the features by which §6.1
        finds an image's nearest neighbours."""
        return torch.cat([rows for _, rows in self._batches(GivenImages(images), self._fc7)])

    def embed_source(
        self, source: ImageSource, *, workers: int = 0, progress: bool = False
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """fc7 vectors of a data set's images in order, batch by batch: (positions, (B, 4096));
        an unreadable image is left out of its batch (§6.1: the features retrieval searches)."""
        return self._batches(_ByPosition(source), self._fc7, workers=workers, progress=progress)

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
        several = len(paths) > self._batch_size(ten_crop)
        batches = self._batches(
            source,
            self._classify,
            ten_crop=ten_crop,
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

    def _batch_size(self, ten_crop: bool) -> int:
        return images_per_batch(self.batch_size, ten_crop, self.recipe)

    @torch.no_grad()
    def _batches(
        self,
        source: ImageSource,
        forward: Callable[[torch.Tensor], torch.Tensor],
        *,
        ten_crop: bool = False,
        workers: int = 0,
        progress: bool = False,
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """(labels, forward(images) on the CPU) for each batch holding a readable image; the
        labels are positions for the sources made here."""
        if len(source) == 0:
            raise ValueError("no images given")
        batches = make_batches(
            source, self.recipe, self.stats, self._batch_size(ten_crop), train=False,
            ten_crop=ten_crop, device=self.placement.device, workers=workers,
            gpu_decode=self.gpu_decode, native_kernels=self.placement.native_kernels,
        )  # fmt: skip
        with tqdm(total=len(source), desc="predict", unit="img", disable=not progress) as bar:
            for images, positions, skipped in batches:
                bar.update(len(positions) + skipped)
                if len(positions):
                    yield positions.tolist(), forward(images).cpu()

    def _classify(self, images: torch.Tensor) -> torch.Tensor:
        return class_probabilities(self.model, images, self.placement, self.views)  # (B, C)

    def _fc7(self, images: torch.Tensor) -> torch.Tensor:
        with self.placement.autocast():
            return self.model.embed(self.placement.images(images)).float()  # (B, 4096)

    def _top(self, probabilities: torch.Tensor, k: int) -> Prediction:
        best = probabilities.topk(min(k, len(self.classes)))
        return Prediction([self.classes[i] for i in best.indices.tolist()], best.values.tolist())


class _ByPosition(ImageSource):
    """A source whose labels are its items' positions, so that each batch says which it holds."""

    def __init__(self, source: ImageSource):
        super().__init__(source.name, source.classes, range(len(source)))
        self.source = source
        self.prepared_size = source.prepared_size

    def pixels(self, index: int, image_size: int) -> torch.Tensor | None:
        return self.source.pixels(index, image_size)

    def encoded(self, index: int) -> torch.Tensor | None:
        return self.source.encoded(index)


def _file_entry(path: str, position: int) -> FileEntry:
    stat = os.stat(path)
    return FileEntry(path, position, stat.st_size, stat.st_mtime_ns)


def _check_top(top: int) -> None:
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")


def write_predictions_csv(path: str | os.PathLike, rows: Sequence[tuple[str, Prediction]]) -> None:
    """One line per image: path, class_1, probability_1, ..., class_K, probability_K; written
    atomically. Skipped files have no line (the warnings named them). Paths and class names
    are `spreadsheet_text`: the JSON keeps them as they are. Lines end in CRLF (RFC 4180), so
    that a name holding a carriage return is quoted too."""
    top = max(len(prediction.classes) for _, prediction in rows)
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(["path", *(f"{name}_{k}" for k in range(1, top + 1) for name in NAMES)])
    for image, prediction in rows:
        cells = [spreadsheet_text(image)]
        for name, probability in zip(*prediction, strict=True):
            cells += [spreadsheet_text(name), f"{probability:.6f}"]
        writer.writerow(cells)
    write_text_atomically(path, text.getvalue())


def spreadsheet_text(text: str) -> str:
    """`text` as a cell no spreadsheet evaluates: a leading ' before a first character that
    starts a formula (OWASP's rule against CSV injection: a class named `=1+1`)."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def write_predictions_json(
    path: str | os.PathLike, rows: Sequence[tuple[str, Prediction]], skipped: Sequence[str]
) -> None:
    """{"predictions": [{"path", "classes", "probabilities"}, ...], "skipped": [path, ...]},
    written atomically."""
    predictions = [{"path": image, **prediction._asdict()} for image, prediction in rows]
    report = {"predictions": predictions, "skipped": list(skipped)}
    write_text_atomically(path, json.dumps(report, indent=1) + "\n")
