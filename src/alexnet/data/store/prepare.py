"""`alexnet prepare SRC DST`: apply §2 once to a data set and write a prepared store (store.py).

One parallel pass over each split of any source: every image is decoded, down-sampled to the
recipe's image size (§2), encoded (JPEG at a quality, or raw pixels) and appended to the split's
file; the training split's exact statistics sums (stats.StatsSums) are kept in the same pass.

Resumable: work goes in chunks of CHUNK images, handed out in order and written in order. Every
COMMIT_SECONDS the files are flushed to disk and a small progress file is replaced atomically,
recording how many images, bytes and index rows are final. A run killed at any point, even by
`kill -9`, is finished by running it again: the files are cut back to the last commit and the
pass goes on from there. Chunks depend only on the images in them and the sums are exact, so
the finished store is byte for byte what an uninterrupted run writes. A finished store is never
rewritten: the command refuses it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save
from tqdm import tqdm

from alexnet.data.loading.process_loader import default_workers
from alexnet.data.sources.dataset import DataError, ImageSource, Splits
from alexnet.data.sources.specs import source_path
from alexnet.data.stats import StatsSums
from alexnet.data.store.chunks import ChunkResults
from alexnet.data.store.read import (
    ENCODINGS,
    JOB,
    MANIFEST,
    SPLITS,
    STATS,
    STORE_FORMAT,
    PreparedSource,
    bin_path,
    fingerprint_of,
    index_path,
    is_store,
)
from alexnet.files import (
    FolderLock,
    inside,
    remove_temporaries,
    write_atomically,
    write_text_atomically,
)

log = logging.getLogger("alexnet.data")
CHUNK = 64  # images per task handed to a worker
COMMIT_SECONDS = 2.0  # at most this much work is redone after a kill


@dataclass(frozen=True)
class Settings:
    """What a store is made with; an unfinished store resumes only with the same settings."""

    source: str  # the --data spec, absolute
    image_size: int  # §2: S
    encoding: str = "jpeg"  # "jpeg" or "raw"
    quality: int = 90  # JPEG quality
    val_fraction: float = 0.1  # held out of a single image-folder tree
    split_seed: int = 0

    def check(self) -> None:
        if self.encoding not in ENCODINGS:
            raise DataError(f"--format {self.encoding!r}: expected one of {', '.join(ENCODINGS)}")
        if not 1 <= self.quality <= 100:
            raise DataError(f"--quality {self.quality}: expected 1 to 100")
        if self.image_size < 1:
            raise DataError(f"image size {self.image_size}: expected >= 1")


def prepare_store(
    splits: Splits,
    destination: Path,
    settings: Settings,
    *,
    workers: int = -1,
    progress: bool = True,
) -> dict[str, Any]:
    """Write (or finish) the store of `splits` at `destination`; returns its manifest.

    workers: processes (-1: one per core, 0: this process). Raises DataError for a finished
    store, a folder that is neither empty nor an unfinished store of the same settings and data,
    or a split without one readable image.
    """
    settings.check()
    source = source_path(settings.source)
    if source is not None and (inside(destination, source) or inside(source, destination)):
        raise DataError(
            f"the store {destination} and the data {source} must not contain one another: "
            "choose a destination outside the source"
        )
    if isinstance(splits.val, PreparedSource):
        raise DataError(f"{settings.source} is a prepared store already")
    job = {"format": STORE_FORMAT, **settings.__dict__, "classes": splits.classes}
    job["fingerprints"] = {split: _source(splits, split).fingerprint() for split in SPLITS}
    busy = DataError(f"another alexnet prepare is writing {destination}")
    with FolderLock(destination, LOCK, busy):
        return _write_store(splits, destination, settings, job, workers, progress)


def _write_store(splits, destination, settings, job, workers, progress) -> dict[str, Any]:
    if is_store(destination) or (destination / JOB).is_file():  # ours: no one else's files
        remove_temporaries(destination)  # a write that a kill cut short
    if _finish_tidying_or_refuse(destination, job):
        return json.loads((destination / MANIFEST).read_text())
    _start_or_resume(destination, job)
    workers = default_workers() if workers < 0 else workers
    states = {
        split: _prepare_split(
            destination, split, _source(splits, split), settings, workers, progress
        )
        for split in SPLITS
    }
    sums = StatsSums.from_state_dict(states["train"]["sums"])
    stats = sums.finish()
    tensors = {key: value for key, value in stats.state_dict().items() if key != "image_size"}
    write_atomically(destination / STATS, lambda file: file.write(save(tensors)))
    manifest = {
        "format": STORE_FORMAT,
        "source": settings.source,
        "image_size": settings.image_size,
        "encoding": settings.encoding,
        "quality": settings.quality if settings.encoding == "jpeg" else None,
        "val_fraction": settings.val_fraction,
        "split_seed": settings.split_seed,
        "classes": splits.classes,
        "description": splits.description,
        "images": {split: states[split]["rows"] for split in SPLITS},
        "skipped": {split: states[split]["skipped"] for split in SPLITS},
        "fingerprint": fingerprint_of(destination),
    }
    write_text_atomically(destination / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    _remove_job_files(destination)
    return manifest


def _source(splits: Splits, split: str) -> ImageSource:
    return splits.train if split == "train" else splits.val


LOCK = ".prepare.lock"  # held while a prepare writes; removed when it ends


def _finish_tidying_or_refuse(destination: Path, job: dict[str, Any]) -> bool:
    """True when `destination` is this very store, killed only while tidying up (which this
    finishes); a finished store otherwise is refused. False when it is not finished."""
    if not is_store(destination):
        return False
    if (destination / JOB).is_file() and _read_job(destination) == job:
        _remove_job_files(destination)
        return True
    raise DataError(
        f"{destination} already holds a finished prepared store; it is never rewritten: remove "
        "it or choose another folder"
    )


def _start_or_resume(destination: Path, job: dict[str, Any]) -> None:
    if (destination / JOB).is_file():
        if _read_job(destination) != job:
            raise DataError(
                f"{destination} holds an unfinished store of other settings or data (see "
                f"{destination / JOB}); remove it, or run prepare again as it was started"
            )
        log.info("prepare: resuming the unfinished store at %s", destination)
        return
    others = [path for path in destination.iterdir() if not _left_by_a_start(path.name)]
    if others:  # the folder itself exists: the lock made it
        raise DataError(f"{destination} exists and is not empty; give a new or empty folder")
    remove_temporaries(destination)
    write_text_atomically(destination / JOB, json.dumps(job, indent=1) + "\n")


def _left_by_a_start(name: str) -> bool:
    """The lock, or the job file's temporary from a start that was killed while writing it."""
    return name == LOCK or (name.startswith(f".{JOB}.") and name.endswith(".tmp"))


def _read_job(destination: Path) -> dict[str, Any]:
    try:
        return json.loads((destination / JOB).read_text())
    except ValueError:
        return {}  # a job file torn by hand: unlike any real job


def _progress_path(destination: Path, split: str) -> Path:
    return destination / f"{split}.progress.pt"


def _remove_job_files(destination: Path) -> None:
    for split in SPLITS:
        _progress_path(destination, split).unlink(missing_ok=True)
    (destination / JOB).unlink(missing_ok=True)


def _prepare_split(
    destination: Path,
    split: str,
    source: ImageSource,
    settings: Settings,
    workers: int,
    progress: bool,
) -> dict[str, Any]:
    """Prepare one split from its last commit on; returns its final progress state."""
    progress_file = _progress_path(destination, split)
    if progress_file.is_file():
        state = torch.load(progress_file, weights_only=True)
    else:
        state = {"done": 0, "bytes": 0, "rows": 0, "skipped": [], "finished": False}
        state["sums"] = StatsSums(settings.image_size).state_dict()
    if state["finished"]:
        return state
    sums = StatsSums.from_state_dict(state["sums"])
    starts = range(state["done"], len(source), CHUNK)
    chunks = [(start, min(start + CHUNK, len(source))) for start in starts]
    files = [_cut_back(bin_path(destination, split), state["bytes"]),
             _cut_back(index_path(destination, split), 24 * state["rows"])]  # fmt: skip
    bar = tqdm(
        total=len(source), initial=state["done"], desc=f"prepare {split}", unit="img",
        disable=not progress, smoothing=0.1,
    )  # fmt: skip
    committed = time.monotonic()
    try:
        with ChunkResults(source, settings, chunks, workers, with_sums=split == "train") as results:
            for (start, stop), result in zip(chunks, results, strict=False):
                encoded, labels, reasons, chunk_sums = result
                items = zip(encoded, labels, reasons, strict=True)
                for position, (data, label, reason) in enumerate(items):
                    if data is None:
                        state["skipped"].append([source.describe(start + position), reason])
                        continue
                    files[1].write(np.array([state["bytes"], len(data), label], "<i8").tobytes())
                    files[0].write(data)
                    state["bytes"] += len(data)
                    state["rows"] += 1
                if chunk_sums is not None:
                    sums.merge(StatsSums.from_state_dict(chunk_sums))
                state["done"] = stop
                bar.update(stop - start)
                if time.monotonic() - committed >= COMMIT_SECONDS or stop == len(source):
                    _commit(files, state, sums, progress_file)
                    committed = time.monotonic()
    finally:
        bar.close()
        for file in files:
            file.close()
    if state["rows"] == 0:
        raise DataError(f"{source.name}: no readable images to prepare")
    state["finished"] = True
    _commit([], state, sums, progress_file)
    return state


def _cut_back(path: Path, length: int):
    """`path` opened for appending after its first `length` bytes (what the last commit made
    final; anything after it was written by a killed run)."""
    file = open(path, "a+b")  # noqa: SIM115 (closed by the caller)
    if file.seek(0, os.SEEK_END) < length:
        file.close()
        raise DataError(f"{path} is shorter than its last commit: the store is damaged; remove it")
    file.truncate(length)
    file.seek(length)
    return file


def _commit(files: list, state: dict[str, Any], sums: StatsSums, progress_file: Path) -> None:
    """Make everything written so far final: data to disk first, then the progress record."""
    for file in files:
        file.flush()
        os.fsync(file.fileno())
    state["sums"] = sums.state_dict()
    write_atomically(progress_file, lambda file: torch.save(state, file))
