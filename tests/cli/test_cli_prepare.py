"""`alexnet prepare`, then `train`, `eval` and `predict` from the store it wrote (--data DST)."""

import contextlib
import io
import json

import pytest

from alexnet import load
from alexnet.cli import main

TINY = ["--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-progress"]
TINY += ["--set", "run.report=false"]  # the report is tested in tests/analysis


def run(argv: list[str]) -> tuple[int, str]:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = main(argv)
    return status, output.getvalue()


@pytest.fixture(scope="module")
def store(tmp_path_factory, colour_tree):
    """The colour tree prepared at 64 px (the digits recipe's size) with 2 processes."""
    folder = tmp_path_factory.mktemp("prepared") / "store"
    argv = ["prepare", str(colour_tree), str(folder), "--recipe", "digits", "--workers", "2"]
    status, printed = run([*argv, "--set", "data.val_fraction=0.25", "--no-progress"])
    assert status == 0
    return folder, printed


def test_prepare_says_what_it_made_and_how_to_train_on_it(store):
    folder, printed = store
    manifest = json.loads((folder / "store.json").read_text())
    assert manifest["images"] == {"train": 27, "val": 9} and manifest["image_size"] == 64
    assert "prepared 27 train and 9 val images at 64 px (jpeg)" in printed
    assert "images/s" in printed
    assert f"alexnet train --recipe digits --data {folder}" in printed


def test_train_eval_and_predict_from_a_store(store, colour_tree, tmp_path, capsys):
    folder, _ = store
    out = tmp_path / "run"
    status, printed = run(
        ["train", "--recipe", "digits", "--data", str(folder), "--out", str(out), *TINY]
    )
    assert status == 0
    log = (out / "train.log").read_text()
    assert f"data: prepared store {folder}: 3 classes, 27 train, 9 val" in log
    assert "data statistics: from the prepared store" in log
    status, printed = run(["eval", str(out), "--workers", "0", "--no-progress", "--ten-crop"])
    assert status == 0 and f"on prepared store {folder}" in printed
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    centre = json.loads((out / "eval-best.json").read_text())["centre crop"]
    assert centre["top1_error"] == record["val_top1_error"] and centre["images"] == 9
    assert load(out).classes == ["blue", "green", "red"]  # predict's class names, from the store


def test_a_second_run_on_the_same_source_reuses_its_statistics(colour_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))  # empty: the first run computes
    for name in ("first", "second"):
        argv = [
            "train",
            "--recipe",
            "digits",
            "--data",
            str(colour_tree),
            "--out",
            str(tmp_path / name),
        ]
        assert run([*argv, *TINY, "--set", "data.val_fraction=0.25"])[0] == 0
    assert "data statistics: 27 images at 64 px" in (tmp_path / "first" / "train.log").read_text()
    assert "data statistics: read from" in (tmp_path / "second" / "train.log").read_text()
    assert len(list((tmp_path / "cache" / "stats").glob("stats-*.pt"))) == 1
    assert not list((tmp_path / "second").glob("stats-*"))  # not kept per run folder


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--format", "png"], "invalid choice: 'png'"),
        (["--quality", "0"], "--quality 0: expected 1 to 100"),
        (["--set", "data.image_size=20"], "data.image_size=20: must be >= data.crop_size"),
    ],
)
def test_bad_prepare_options_are_one_line_with_status_2(
    colour_tree, tmp_path, argv, message, capsys
):
    with pytest.raises(SystemExit) if argv[0] == "--format" else contextlib.nullcontext():
        assert main(["prepare", str(colour_tree), str(tmp_path / "store"), *argv]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0]
    assert not (tmp_path / "store").exists()


def test_a_finished_store_is_refused_in_one_line(store, colour_tree, capsys):
    folder, _ = store
    assert main(["prepare", str(colour_tree), str(folder), "--recipe", "digits"]) == 2
    error = capsys.readouterr().err.strip()
    assert "already holds a finished prepared store; it is never rewritten" in error


def test_prepare_explains_itself(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--help"])
    assert exit_info.value.code == 0
    assert "killed at any point" in capsys.readouterr().out.lower()
