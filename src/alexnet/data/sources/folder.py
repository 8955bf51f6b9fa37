"""Image-folder trees, `root/<class>/<image>`: your own labelled photos, trained the paper's way.

A class is a sub-folder of the root (sorted names give the labels); its images are every file,
at any depth below it, with a suffix Pillow can open (case ignored). Other files (`.txt`,
`.DS_Store`) and hidden files or folders are ignored. A tree is used either as a pair
`train/` + `val/`, or alone, with a seeded, stratified fraction held out for validation. A pair
opened for validation only lists train/'s class folders (the labels) and walks no training image.
`find_image_files` applies the same rule to the files, folders and globs given to predict.
Links are followed, but a folder already visited (the same device and inode: a link loop such
as `ln -s . loop`, or a second path to one folder) is not entered again, with one warning each:
a scan ends, and lists each image once. Names that are not valid UTF-8 are kept as Python's
surrogate escapes (os.fsdecode), so the files still open, and print with backslash escapes.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from alexnet.data.sources.dataset import (
    UNREADABLE,
    DataError,
    FileEntry,
    FileSource,
    Splits,
    empty_files_note,
    same_class_names,
    stratified_split,
)
from alexnet.data.sources.decode import is_image_name

log = logging.getLogger("alexnet.data")


def scan_image_folder(
    root: Path, classes: list[str] | None = None, visited: set[tuple[int, int]] | None = None
) -> tuple[list[str], list[FileEntry]]:
    """The class names and every image file of the tree at `root`, in sorted order.

    classes: the class list to label against (a validation tree uses the training tree's);
    None takes the tree's own class folders. An empty class folder is a DataError. visited: the
    folders scanned already (a train/ + val/ pair shares one set), each entered once.
    """
    folders = class_folders(root)
    visited = set() if visited is None else visited
    _first_visit(str(root), visited)  # a link up to the root or to a class: not walked again
    walked = [folder for folder in folders if _first_visit(str(root / folder), visited)]
    if classes is None:
        classes = folders
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise DataError(f"{root}: class folders not in the training set: {', '.join(unknown[:5])}")
    label_of = {name: label for label, name in enumerate(classes)}
    entries: list[FileEntry] = []
    for folder in folders:
        found = (
            list(_image_files(root / folder, label_of[folder], visited)) if folder in walked else []
        )
        if not any(entry.size > 0 for entry in found):
            detail = f" (only {len(found)} empty or unreadable files)" if found else ""
            raise DataError(f"class folder {root / folder} has no images{detail}")
        entries += found
    return classes, entries


def class_folders(root: Path) -> list[str]:
    """The sorted names of `root`'s class folders (sub-folders, hidden ones left out): one
    listing of `root`, nothing below it. No folder at all is a DataError."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    folders = sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if not folders:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<image>)")
    same = same_class_names(folders)
    if same:
        raise DataError(
            f"{root}: class folders {printable(same[0])!r} and {printable(same[1])!r} are one "
            "name in two Unicode forms; rename one"
        )
    return folders


def scan_train_folder(
    root: Path, val_only: bool, visited: set[tuple[int, int]] | None = None
) -> tuple[list[str], list[FileEntry] | None]:
    """`scan_image_folder(root)` of a train/ tree; val_only: its class folders only, no entries."""
    return (class_folders(root), None) if val_only else scan_image_folder(root, None, visited)


def split_counts(train: FileSource | None, val: FileSource, val_note: str = "") -> str:
    """ "N train, M val<val_note>" and the empty-files note, for a pair's description; "train/ not
    opened" stands for N when only validation was opened (train None)."""
    if train is None:
        return f"train/ not opened, {len(val)} val{val_note}{empty_files_note(val)}"
    return f"{len(train)} train, {len(val)} val{val_note}{empty_files_note(train, val)}"


def _image_files(folder: Path, label: int, visited: set[tuple[int, int]]):
    """FileEntry of every image file below `folder` (visited already), sorted; links followed,
    each folder below entered once."""
    for directory, subfolders, names in os.walk(folder, followlinks=True, onerror=_unwalkable):
        subfolders[:] = [
            name
            for name in sorted(subfolders)
            if not name.startswith(".") and _first_visit(os.path.join(directory, name), visited)
        ]
        for name in sorted(names):
            if is_image_name(name) and not name.startswith("."):
                path = os.path.join(directory, name)
                try:
                    stat = os.stat(path)
                except OSError:  # a dangling symlink, or a folder we may not look into
                    yield FileEntry(path, label, UNREADABLE, 0)
                    continue
                yield FileEntry(path, label, stat.st_size, stat.st_mtime_ns)


def _unwalkable(error: OSError) -> None:
    """A folder that cannot be looked into (a path past PATH_MAX, no permission): said once."""
    where = printable(os.fsdecode(error.filename or "a folder"))
    log.warning("%s: cannot list it (%s); the images below it are skipped", where, error.strerror)


def _first_visit(folder: str, visited: set[tuple[int, int]]) -> bool:
    """Mark `folder` visited; False (with a warning) when it was already, or cannot be looked at."""
    try:
        status = os.stat(folder)
    except OSError as error:  # a path past PATH_MAX, no permission: nothing below is read
        _unwalkable(error)
        return False
    identity = (status.st_dev, status.st_ino)
    if identity in visited:
        log.warning(
            "skipping %s: a folder already scanned (a link loop, or a second path to it)",
            printable(folder),
        )
        return False
    visited.add(identity)
    return True


def printable(path: str) -> str:
    """A path or name safe to print: bytes that are not UTF-8, and control characters (a
    newline, a terminal's escape sequences), shown as backslash escapes."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def find_image_files(arguments: Sequence[str]) -> list[str]:
    """The image files that command-line arguments name, in order, each once.

    A file is taken as given (its content says whether it is an image); a folder gives its image
    files at any depth, sorted, as a class folder does; any other argument is a glob pattern
    (`**` crosses folders) whose matching image files and folders are taken the same way.
    """
    found: list[str] = []
    visited: set[tuple[int, int]] = set()
    for argument in arguments:
        is_pattern = not os.path.exists(argument)
        matches = sorted(glob.glob(argument, recursive=True)) if is_pattern else [argument]
        if not matches:
            raise DataError(f"{argument}: no such file or folder")
        for match in matches:
            if os.path.isdir(match):
                if _first_visit(match, visited):
                    found += [entry.path for entry in _image_files(Path(match), 0, visited)]
            elif not is_pattern or is_image_name(os.path.basename(match)):
                found.append(match)
    if not found:
        raise DataError(f"no image files in {', '.join(arguments)}")
    return list(dict.fromkeys(found))


def open_folder_pair(root: Path, *, val_only: bool = False) -> Splits:
    """`root/train/<class>/...` and `root/val/<class>/...`, labelled by the training classes.

    val_only: train/ gives only its class folders' names, and Splits.train is None.
    """
    visited: set[tuple[int, int]] = set()  # a val/ folder linked into train/ is entered once
    classes, train_entries = scan_train_folder(root / "train", val_only, visited)
    _, val_entries = scan_image_folder(root / "val", classes, visited)
    train = None
    if train_entries is not None:
        train = FileSource(f"image folder {root / 'train'}", classes, train_entries)
    val = FileSource(f"image folder {root / 'val'}", classes, val_entries)
    return Splits(
        train,
        val,
        classes,
        f"image folders {root}/train and /val: {len(classes)} classes, {split_counts(train, val)}",
    )


def open_folder_tree(root: Path, val_fraction: float, seed: int) -> Splits:
    """One tree; a seeded, stratified `val_fraction` of each class is held out for validation."""
    classes, entries = scan_image_folder(root)
    labels = [entry.label for entry in entries]
    train_indices, val_indices = stratified_split(
        labels, classes, val_fraction, seed, what=f"image folder {root}"
    )
    train = FileSource(
        f"image folder {root} (train split)", classes, [entries[i] for i in train_indices]
    )
    val = FileSource(
        f"image folder {root} (held-out split)", classes, [entries[i] for i in val_indices]
    )
    return Splits(
        train,
        val,
        classes,
        f"image folder {root}: {len(classes)} classes, {len(train)} train, {len(val)} val; "
        f"{val_fraction:.0%} held out for validation (seeded, stratified)"
        + empty_files_note(train, val),
    )
