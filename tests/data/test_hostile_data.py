"""Data a careless or hostile user hands over: a damaged store.json or index, class names that
are one name, an empty --data, folders too deep to list, names that are terminal escapes, a
store prepared through a bind mount of its own source."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from data_helpers import write_tree
from test_store import prepare

from alexnet.data import DataError, open_source
from alexnet.data.sources.folder import printable, scan_image_folder
from alexnet.data.sources.specs import absolute_source


def _val_skipped_null(store: Path) -> None:
    manifest = json.loads((store / "store.json").read_text())
    manifest["skipped"]["val"] = None
    (store / "store.json").write_text(json.dumps(manifest))


def _one_class_twice(store: Path) -> None:
    manifest = json.loads((store / "store.json").read_text())
    manifest["classes"][1] = manifest["classes"][0]
    (store / "store.json").write_text(json.dumps(manifest))


def _offset_that_wraps(store: Path) -> None:
    rows = np.fromfile(store / "val.index", dtype="<i8").reshape(-1, 3)
    rows[0, 0] = 2**63 - 1  # offset + length wraps to a negative number
    rows.tofile(store / "val.index")


@pytest.mark.parametrize(
    ("damage", "file", "message"),
    [
        (_val_skipped_null, "store.json", "skipped=.* is not lists of the files left out"),
        (_one_class_twice, "store.json", "is not a list of distinct class names"),
        (_offset_that_wraps, "val.index", "offset 9223372036854775807, .* lies outside val.bin"),
    ],
)
def test_a_hostile_store_is_one_line_naming_the_file(image_tree, tmp_path, damage, file, message):
    store = tmp_path / "store"
    prepare(str(image_tree), store)
    damage(store)
    with pytest.raises(DataError, match=message) as error:
        splits = open_source(str(store))
        [splits.val.load(index) for index in range(len(splits.val))]
    assert str(store / file) in str(error.value) and "\n" not in str(error.value)


def test_class_folders_that_are_one_name_in_two_unicode_forms_are_refused(tmp_path):
    composed, decomposed = "caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")
    write_tree(tmp_path / "data", {composed: 2, decomposed: 2, "tea": 2})
    with pytest.raises(DataError, match="are one name in two Unicode forms"):
        scan_image_folder(tmp_path / "data")


@pytest.mark.parametrize("spec", ["", "  "])
def test_an_empty_data_source_is_refused_not_the_current_folder(spec, tmp_path, monkeypatch):
    write_tree(tmp_path, {"a": 2, "b": 2})  # what the current folder would give
    monkeypatch.chdir(tmp_path)
    for open_it in (open_source, absolute_source):
        with pytest.raises(DataError, match="the data source is empty"):
            open_it(spec)


def test_a_folder_too_deep_to_list_is_named_in_a_warning(tmp_path, caplog):
    write_tree(tmp_path / "data", {"a": 2, "b": 2})
    descriptor = os.open(tmp_path / "data" / "a", os.O_RDONLY)
    for _ in range(24):  # 24 × 201 characters: past PATH_MAX (4096) below data/a
        os.mkdir("d" * 200, dir_fd=descriptor)
        deeper = os.open("d" * 200, os.O_RDONLY, dir_fd=descriptor)
        os.close(descriptor)
        descriptor = deeper
    os.close(descriptor)
    caplog.set_level(logging.WARNING, logger="alexnet.data")
    classes, entries = scan_image_folder(tmp_path / "data")
    assert len(entries) == 4
    assert any("cannot list it" in record.getMessage() for record in caplog.records)


def test_control_characters_in_a_name_are_printed_escaped():
    assert printable("cat\n\x1b[2Jdog\udcff") == "cat\\n\\x1b[2Jdog\\xff"


def test_a_store_prepared_through_a_bind_mount_of_its_source_is_refused(image_tree, tmp_path):
    mount = tmp_path / "mount"
    mount.mkdir()
    if subprocess.run(["mount", "--bind", str(image_tree), str(mount)]).returncode != 0:
        pytest.skip("bind mounts need root")
    try:
        with pytest.raises(DataError, match="must not contain one another"):
            prepare(str(mount), image_tree / "store")
        assert not (image_tree / "store").exists()
    finally:
        subprocess.run(["umount", str(mount)], check=True)
