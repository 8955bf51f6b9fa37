"""The report of a run or an experiment: one self-contained `report.html` (§6, §6.1).

`write_run_report(run_dir)` gathers what a run wrote (recipe.json, metrics.jsonl, curves.png,
conv1.png) and computes what it has not: the evaluation (centre crop and ten crops, §4.1),
Figure 4's top-5 panels (`top5.png`) and fc7 nearest neighbours (`neighbours.png`), and the recall
of the binary codes (`codes.json`, §6.1), each once per checkpoint (kept in RUN/cache/, cache.py:
a second report of the same checkpoint only reads). `write_report(path, title, subtitle,
sections)` renders any sections with `templates/report.html.j2` (jinja2, autoescaped); the
experiments use it too.
Images are embedded as data URIs, so the page opens from a file with no network.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
from PIL import Image

from alexnet.analysis.binary_codes import evaluate_codes
from alexnet.analysis.cache import FOLDER as CACHE
from alexnet.analysis.cache import cache_path, cached_file, cached_json, data_stamp, keep_page
from alexnet.analysis.plots import Neighbours, Top5, plot_neighbours, plot_top5
from alexnet.analysis.retrieval import Features, cached_features, nearest_neighbours
from alexnet.data import ImageSource, Splits, open_splits
from alexnet.data.sources.digits import digits_table
from alexnet.data.sources.specs import source_path
from alexnet.errors import UserError
from alexnet.evaluate import evaluate_checkpoint
from alexnet.files import remove_temporaries, write_text_atomically
from alexnet.inference import TrainedNetwork
from alexnet.recipe import Recipe
from alexnet.run import checkpoint
from alexnet.run import folder as run_folder
from alexnet.run.folder import read_metrics

log = logging.getLogger("alexnet")


class ReportError(UserError):
    """A report that cannot be made as asked (an image index outside the validation set)."""


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    """A heading with paragraphs, an optional table and PNG files (embedded when they exist)."""

    title: str
    text: list[str] = field(default_factory=list)
    table: Table | None = None
    images: list[tuple[str, Path]] = field(default_factory=list)  # (caption, PNG)


def write_report(path: Path, title: str, subtitle: str, sections: list[Section]) -> Path:
    """Render the sections as one HTML page at `path`, images inlined as base64 PNG."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("alexnet.analysis"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    rendered = [
        {
            "title": s.title,
            "text": s.text,
            "table": s.table,
            "images": [
                {"caption": caption, "data": base64.b64encode(png.read_bytes()).decode()}
                for caption, png in s.images
                if png.exists()
            ],
        }
        for s in sections
    ]
    html = environment.get_template("report.html.j2").render(
        title=title, subtitle=subtitle, sections=rendered
    )
    write_text_atomically(path, html)
    return path


def percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def write_run_report(
    run_dir: Path | str,
    *,
    device: str = "auto",
    workers: int = 0,
    samples: int = 8,
    indices: list[int] | None = None,
    ten_crop: bool = True,
    bits: int = 256,
    queries: int = 1_000,
    progress: bool = False,
) -> Path:
    """Write `report.html` (and top5.png, neighbours.png, codes.json) into a run folder.

    samples: validation images for the top-5 panels, seeded; `indices` chooses them instead.
    The first six of them are the nearest-neighbour queries. queries: the binary codes' recall
    is measured for a seeded sample of at most this many validation images (the exact search
    it is measured against costs queries × training images × 4096). What is computed from the
    checkpoint is cached in RUN/cache/ (cache.py): the network is built only when something is
    missing there; the page is kept there too, for `cache.saved_page`. The run folder is locked
    while this writes (run/folder.py): training or another report there is turned away.
    """
    run_dir = Path(run_dir)
    state = checkpoint.load(run_dir, prefer="best.pt")
    saved = Path(state["path"])
    run_dir = saved.parent  # RUN/best.pt given: its run folder
    options = dict(
        samples=samples, indices=indices, ten_crop=ten_crop, bits=bits, queries=queries,
        device=device,
    )  # fmt: skip
    with run_folder.lock(run_dir):  # one writer of the run folder at a time
        recipe = checkpoint.recipe_of(state)
        data = _data_files(recipe.data.source)
        stamp = data_stamp(data)  # before the data is read: a change while it is, and the page
        # kept at the end is not found again
        records = read_metrics(run_dir / "metrics.jsonl")  # a cut last line: warned, dropped
        if (run_dir / CACHE).is_dir():
            remove_temporaries(run_dir / CACHE)  # left by a report that was killed
        splits = open_splits(recipe.data)
        analysis = _Analysis(state, splits, device, workers, progress)
        chosen = _pick(splits.val, samples, indices, recipe.run.seed)  # a bad index: before work
        sections = _run_sections(recipe, records, splits, run_dir)
        timings: dict[str, float] = {}

        start = time.perf_counter()
        results = analysis.evaluation(ten_crop)
        timings["evaluation (one crop and ten crops)"] = time.perf_counter() - start
        sections.append(_evaluation_section(state, results))

        start = time.perf_counter()
        sections += _figure4_sections(analysis, chosen, run_dir)
        timings["Figure 4 (top-5, fc7 features and neighbours)"] = time.perf_counter() - start

        start = time.perf_counter()
        sections.append(_codes_section(analysis, run_dir, bits, queries, recipe.run.seed))
        timings["binary codes (fit, encode, search)"] = time.perf_counter() - start
        sections.append(_timings_section(records, timings))
        subtitle = f"{run_dir.resolve()} · {saved} (epoch {state['epoch']})"
        page = write_report(run_dir / "report.html", f"Run {run_dir.name}", subtitle, sections)
        if stamp is not None:
            keep_page(page, saved, options, data, stamp)
        return page


def _data_files(spec: str) -> list[Path]:
    """The files a run's data is read from, for the stamp of a kept page (cache.py); none where
    a source does not say (a named data set found in its default folder): no page is kept."""
    if spec == "digits":
        table = digits_table()
        return [table] if table is not None else []
    path = source_path(spec)
    return [path] if path is not None else []


class _Analysis:
    """A checkpoint, its data and where the results computed from them are cached: the network
    is built, and fc7 computed, only when a cached result is missing (cache.py)."""

    def __init__(self, state: dict, splits: Splits, device: str, workers: int, progress: bool):
        self.state, self.splits, self.device = state, splits, device
        self.workers, self.progress = workers, progress
        self.fingerprints = (splits.train.fingerprint(), splits.val.fingerprint())
        self._network: TrainedNetwork | None = None

    def cache(self, what: str, suffix: str, *options: object) -> Path:
        return cache_path(Path(self.state["path"]), what, suffix, *self.fingerprints, *options)

    @property
    def network(self) -> TrainedNetwork:
        if self._network is None:
            self._network = TrainedNetwork(self.state, device=self.device)
        return self._network

    def evaluation(self, ten_crop: bool) -> dict[str, dict]:
        """evaluate_checkpoint's figures per view, from the cache or computed."""
        return cached_json(
            self.cache("evaluation", ".json", ten_crop, self.device),
            lambda: evaluate_checkpoint(
                self.state, ten_crop=ten_crop, device=self.device, workers=self.workers,
                progress=self.progress,
            )[1],
        )  # fmt: skip

    def features(self, split: str) -> Features:
        """fc7 of every image of the split ("train" or "val"), from its cache or computed."""
        source = getattr(self.splits, split)
        return cached_features(
            Path(self.state["path"]), lambda: self.network, source, split,
            workers=self.workers, progress=self.progress,
        )  # fmt: skip


def _run_sections(
    recipe: Recipe, records: list[dict], splits: Splits, run_dir: Path
) -> list[Section]:
    """Recipe, data summary, curves and conv1 kernels: what training wrote."""
    recipe_rows = [
        [f"{section}.{key}", str(value)]
        for section, values in recipe.to_dict().items()
        if isinstance(values, dict)
        for key, value in values.items()
    ]
    data_rows = [
        ["training images", f"{len(splits.train):,}"],
        ["validation images", f"{len(splits.val):,}"],
        ["classes", f"{len(splits.classes):,}"],
        ["files skipped in the last epoch", str(records[-1]["skipped"] if records else 0)],
    ]
    epoch_rows = [
        [
            str(r["epoch"]),
            f"{r['lr']:.0e}",
            f"{r['train_loss']:.4f}",
            percent(r["train_top1_error"]),
            f"{r['val_loss']:.4f}",
            percent(r["val_top1_error"]),
            percent(r["val_top5_error"]),
            f"{r['images_per_s']:.0f}",
            f"{r['seconds']:.1f}",
        ]
        for r in records
    ]
    epoch_headers = ["epoch", "lr", "train loss", "train top-1", "val loss", "val top-1"]
    epoch_headers += ["val top-5", "images/s", "seconds"]
    return [
        Section(
            "Recipe",
            [f"Recipe {recipe.name!r}, as resolved (recipe.json)."],
            Table(["field", "value"], recipe_rows),
        ),  # fmt: skip
        Section("Data", [splits.description], Table(["", ""], data_rows)),
        Section(
            "Training",
            table=Table(epoch_headers, epoch_rows),
            images=[("Loss and error against epoch (curves.png)", run_dir / "curves.png")],
        ),
        Section(
            "Figure 3: conv1 kernels",
            ["Each kernel scaled to [0, 1] on its own; the two towers (§3.2) drawn apart."],
            images=[("conv1.png", run_dir / "conv1.png")],
        ),
    ]


def _evaluation_section(state: dict, results: dict[str, dict]) -> Section:
    rows = [
        [view, percent(r["top1_error"]), percent(r["top5_error"]), f"{r['loss']:.4f}",
         str(r["images"]), str(r["skipped"])]
        for view, r in results.items()
    ]  # fmt: skip
    return Section(
        "Evaluation (§6)",
        [f"{state['path']} (epoch {state['epoch']}) on the validation set; ten crops: the four "
         "corners and the centre and their reflections, softmax averaged (§4.1)."],
        Table(["view", "top-1 error", "top-5 error", "loss", "images", "skipped"], rows),
    )  # fmt: skip


def _pick(source: ImageSource, samples: int, indices: list[int] | None, seed: int) -> list[int]:
    """The validation images to show: those asked for, else a seeded sample."""
    if indices:
        outside = [i for i in indices if not 0 <= i < len(source)]
        if outside:
            raise ReportError(
                f"image index {outside[0]} outside the {len(source)} validation images"
            )
        return list(indices)
    order = np.random.default_rng(seed).permutation(len(source))
    return sorted(order[:samples].tolist())


def _image(source: ImageSource, index: int) -> Image.Image | None:
    item = source.load(index)
    return None if item is None else item[0]


def _figure4_sections(
    analysis: _Analysis, chosen: list[int], run_dir: Path, queries: int = 6, neighbours: int = 6
) -> list[Section]:
    """top5.png and neighbours.png (Figure 4) for the chosen validation images."""
    splits = analysis.splits
    val, train = splits.val, splits.train
    shown = [(i, image) for i in chosen if (image := _image(val, i)) is not None]

    def draw_top5(path: Path) -> None:
        net = analysis.network
        probabilities = net.probabilities([image for _, image in shown])
        panels = []
        for row, (index, image) in enumerate(shown):
            best = probabilities[row].topk(min(5, len(net.classes)))
            names = [net.classes[c] for c in best.indices.tolist()]
            truth = splits.classes[val.labels[index]]
            panels.append(Top5(np.asarray(image), truth, names, best.values.tolist()))
        plot_top5(panels, path)

    def draw_neighbours(path: Path) -> None:
        train_features, val_features = analysis.features("train"), analysis.features("val")
        asked = [i for i, _ in shown][:queries]
        found, distances = nearest_neighbours(
            val_features.vectors[asked], train_features.vectors, neighbours,
            usable=train_features.readable,
        )  # fmt: skip
        rows = [
            Neighbours(
                np.asarray(image), splits.classes[val.labels[index]],
                [np.asarray(_image(train, j)) for j in found[q]],
                [splits.classes[train.labels[j]] for j in found[q]], distances[q].tolist(),
            )
            for q, (index, image) in enumerate(shown[:queries])
        ]  # fmt: skip
        plot_neighbours(rows, path)

    if shown:
        picked = [i for i, _ in shown]
        cached_file(analysis.cache("top5", ".png", picked), draw_top5, run_dir / "top5.png")
        cached_file(
            analysis.cache("neighbours", ".png", picked[:queries], neighbours),
            draw_neighbours, run_dir / "neighbours.png",
        )  # fmt: skip
    return [
        Section("Figure 4 (left): top-5 predictions",
                [f"Validation images {', '.join(map(str, chosen))}; the true class in red."],
                images=[("top5.png", run_dir / "top5.png")]),
        Section("Figure 4 (right): nearest neighbours by fc7",
                [f"For each query (a validation image), the {neighbours} training images whose "
                 "fc7 vectors (4096-d) are nearest in Euclidean distance, exact search."],
                images=[("neighbours.png", run_dir / "neighbours.png")]),
    ]  # fmt: skip


def _codes_section(
    analysis: _Analysis, run_dir: Path, bits: int, queries: int, seed: int
) -> Section:
    """§6.1's binary codes: recall of the exact fc7 neighbours, speed-up; written to codes.json.
    The queries: the readable validation images, a seeded sample of at most `queries`."""

    def compute() -> dict:
        train, val = analysis.features("train"), analysis.features("val")
        database = train.vectors if train.readable.all() else train.vectors[train.readable]
        rows = np.flatnonzero(val.readable)
        if len(rows) > queries:
            rows = np.sort(np.random.default_rng(seed).choice(rows, queries, replace=False))
        return evaluate_codes(database, np.asarray(val.vectors[rows]), bits=bits)

    result = cached_json(analysis.cache(f"codes{bits}", ".json", queries, seed), compute)
    write_text_atomically(run_dir / "codes.json", json.dumps(result, indent=2) + "\n")
    return codes_section(result)


def codes_section(result: dict) -> Section:
    shortlist = result["shortlist"]
    rows = [
        [name, str(result["bits"]), f"{r['recall_at_k']:.3f}",
         f"{r[f'recall_at_k_in_top_{shortlist}']:.3f}", f"{1000 * r['search_seconds']:.2f}",
         f"{r['speedup']:.1f}×"]
        for name, r in result["codes"].items()
    ]  # fmt: skip
    k = result["k"]
    return Section(
        "Binary codes for retrieval (§6.1)",
        [f"fc7 vectors of {result['database']:,} training images compressed to {result['bits']}-"
         f"bit codes and searched by Hamming distance (faiss) for {result['queries']:,} "
         f"validation queries. recall@{k}: the share of each query's {k} exact fc7 neighbours "
         f"among its {k} nearest codes; the exact search took "
         f"{1000 * result['exact_search_seconds']:.2f} ms. Speed-up: exact search time over "
         f"Hamming search time (for the top {shortlist}). Also in codes.json."],
        Table(["code", "bits", f"recall@{k}", f"recall@{k} in top {shortlist}",
               "search ms", "speed-up"], rows),
    )  # fmt: skip


def _timings_section(records: list[dict], timings: dict[str, float]) -> Section:
    rows = [
        ["training, all epochs", f"{sum(r['seconds'] for r in records):.1f} s"],
        ["training images/s (mean over epochs)",
         f"{np.mean([r['images_per_s'] for r in records]):.0f}" if records else "-"],
        *[[name, f"{seconds:.1f} s"] for name, seconds in timings.items()],
    ]  # fmt: skip
    return Section("Timings", table=Table(["", ""], rows))


def write_report_after_training(run_dir: Path, recipe: Recipe) -> None:
    """After training (`alexnet train`): write report.html unless `run.report=false`; a report
    that fails is a warning, never a failed run."""
    if not recipe.run.report:
        return
    try:
        path = write_run_report(run_dir, device=recipe.run.device, workers=recipe.run.workers)
        log.info("report: %s", path)
    except Exception as error:  # a report must not lose a finished run
        log.warning(
            "report.html not written (%s: %s); retry with: alexnet report %s",
            type(error).__name__, error, run_dir,
        )  # fmt: skip
