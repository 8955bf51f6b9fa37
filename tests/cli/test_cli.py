"""The command line: train, eval reproducing the recorded figures, predict, and one-line errors."""

import contextlib
import csv
import errno
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexnet import load
from alexnet.cli import main
from alexnet.errors import UserError
from alexnet.run import checkpoint
from tests.conftest import COLOURS, write_image

TINY = [
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--no-progress",
    "--set",
    "data.val_fraction=0.25",
    "--set",
    "run.report=false",  # the report is tested in tests/analysis
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, colour_tree):
    """A run trained through the CLI, and what the command printed."""
    run = tmp_path_factory.mktemp("cli") / "run"
    argv = ["train", "--recipe", "digits", "--data", str(colour_tree), "--out", str(run), *TINY]
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert main(argv) == 0
    return run, output.getvalue()


@pytest.fixture(scope="module")
def trained_run(trained):
    return trained[0]


@pytest.fixture(autouse=True)
def _in_a_scratch_folder(tmp_path, monkeypatch):
    """Commands that default to runs/ write under a temporary folder, not the checkout."""
    monkeypatch.chdir(tmp_path)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("alexnet")
    return err[0]


def test_train_prints_the_error_and_where_the_run_is(trained):
    run, printed = trained
    best = min(json.loads(line)["val_top1_error"] for line in (run / "metrics.jsonl").open())
    assert f"best validation top-1 error: {100 * best:.2f}%" in printed
    assert f"run folder: {run}" in printed
    assert f"alexnet eval {run} --ten-crop" in printed


def assert_best_epoch_reproduced(run: Path, centre: dict) -> None:
    """`eval`'s centre-crop figures are those recorded for the best epoch during training."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = min(records, key=lambda r: r["val_top1_error"])
    assert centre["top1_error"] == best["val_top1_error"]
    assert centre["top5_error"] == best["val_top5_error"]
    assert centre["loss"] == pytest.approx(best["val_loss"], rel=1e-5)


def test_eval_reproduces_the_recorded_validation_figures(trained_run, capsys):
    assert main(["eval", str(trained_run), "--workers", "0", "--no-progress", "--ten-crop"]) == 0
    out = capsys.readouterr().out
    assert "centre crop" in out and "ten crops" in out
    report = json.loads((trained_run / "eval-best.json").read_text())
    centre = report["centre crop"]
    assert_best_epoch_reproduced(trained_run, centre)
    assert 0 <= report["ten crops"]["top1_error"] <= 1
    assert report["ten crops"]["images"] == centre["images"]


def test_eval_needs_no_training_image(ilsvrc_tree, tmp_path, capsys):
    data, run = tmp_path / "imagenet", tmp_path / "run"
    shutil.copytree(ilsvrc_tree, data)
    argv = ["train", "--recipe", "digits", "--data", str(data), "--out", str(run), *TINY]
    assert main([*argv, "--epochs", "1"]) == 0
    for image in (data / "train").glob("*/*.JPEG"):  # the wnid folders stay: they are the labels
        image.unlink()
    capsys.readouterr()
    assert main(["eval", str(run), "--workers", "0", "--no-progress"]) == 0
    assert "2 classes, train/ not opened, 2 val" in capsys.readouterr().out
    assert_best_epoch_reproduced(
        run, json.loads((run / "eval-best.json").read_text())["centre crop"]
    )


def test_predict_prints_top_classes_with_probabilities(trained_run, tmp_path, capsys):
    image = tmp_path / "query.png"
    write_image(image, COLOURS["green"], size=(30, 24), seed=7)
    assert main(["predict", str(trained_run / "best.pt"), str(image)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == str(image)
    rows = [line.split() for line in lines[1:]]
    assert len(rows) == 3  # top-5 capped at the three classes
    probabilities = [float(row[0].rstrip("%")) for row in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(100, abs=0.05)
    assert {row[1] for row in rows} == {"blue", "green", "red"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "/no/such/folder"], "/no/such/folder"),
        (["train", "--recipe", "imagenet"], "unknown recipe 'imagenet'"),
        (["train", "--set", "optim.learning_rate=0.1"], "unknown recipe key 'optim.learning_rate'"),
        (["train", "--set", "optim.lr=fast"], "optim.lr='fast': expected float"),
        (["eval", "/no/such/run"], "no checkpoint at /no/such/run"),
        (["train", "--epochs", "0"], "schedule.epochs=0: must be >= 1"),
        (["train", "--set", "data.crop_size=32"], "data.crop_size=32: must be >= 63"),
        (["train", "--device", "gpu"], "unknown device 'gpu'"),
    ],
)
def test_errors_are_one_line_with_status_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in one_error_line(capsys)


def test_a_recipe_file_repeats_the_run_exactly(trained_run, tmp_path):
    again = tmp_path / "again"
    argv = ["train", "--recipe", str(trained_run / "recipe.json"), "--out", str(again)]
    assert main([*argv, "--no-progress"]) == 0
    assert (again / "recipe.json").read_text() == (trained_run / "recipe.json").read_text()
    first, second = (
        [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for run in (trained_run, again)
    )
    timing = {"images_per_s", "seconds"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in second] == [
        {k: v for k, v in r.items() if k not in timing} for r in first
    ]
    weights = checkpoint.load(again)["model"]
    for name, tensor in checkpoint.load(trained_run)["model"].items():
        assert torch.equal(tensor, weights[name]), name


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "does not hold a JSON object"),
        ('{"optim": {"lr": "fast"}}', "optim.lr='fast': expected float"),
        ('{"optim": {"learning_rate": 0.1}}', "unknown recipe key 'optim.learning_rate'"),
    ],
)
def test_a_bad_recipe_file_is_one_line(content, message, tmp_path, capsys):
    (tmp_path / "recipe.json").write_text(content)
    assert main(["train", "--recipe", str(tmp_path / "recipe.json")]) == 2
    line = one_error_line(capsys)
    assert message in line and "recipe.json" in line


def test_any_user_error_is_one_line_with_status_2(monkeypatch, capsys):
    class NewKindOfMistake(UserError):
        """An error class added anywhere in the package."""

    def handler(args):
        raise NewKindOfMistake("a mistake the user can fix")

    monkeypatch.setattr("alexnet.cli.commands._evaluate", handler)
    assert main(["eval", "anything"]) == 2
    assert one_error_line(capsys) == "alexnet: error: a mistake the user can fix"


def test_usage_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "many"])
    assert exit_info.value.code == 2
    assert "invalid int value: 'many'" in one_error_line(capsys)


def test_folder_without_images_writes_nothing(tmp_path, capsys):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    (tmp_path / "empty" / "cats" / "notes.txt").write_text("no images here")
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run")]) == 2
    assert "empty" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_corrupt_checkpoint(tmp_path, capsys):
    (tmp_path / "best.pt").write_bytes(b"\x00garbage")
    assert main(["eval", str(tmp_path / "best.pt")]) == 2
    assert "is not a readable checkpoint" in one_error_line(capsys)


def test_checkpoint_of_another_variant_loses_nothing(trained_run, capsys):
    before = {
        p.name: p.read_bytes() for p in trained_run.iterdir() if p.suffix in (".pt", ".jsonl")
    }
    argv = ["train", "--resume", str(trained_run), "--epochs", "3", "--set", "model.variant=owt"]
    assert main(argv) == 2
    assert "holds a 'paper' AlexNet, not the 'owt' variant" in one_error_line(capsys)
    after = {p.name: p.read_bytes() for p in trained_run.iterdir() if p.suffix in (".pt", ".jsonl")}
    assert after == before


def test_the_installed_command_has_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "alexnet", "train", "--data", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "command", ["train", "eval", "predict", "export", "import-torchvision", "demo"]
)
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert len(capsys.readouterr().out) > 200


def test_predict_on_an_unreadable_image(trained_run, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["predict", str(trained_run), str(broken)]) == 2
    warning, error = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith(f"skipping {broken}: cannot decode")
    assert error == "alexnet: error: no readable images among 1 files (1 skipped)"


@pytest.fixture
def photos(tmp_path):
    """photos/ with images two folders deep, a corrupt JPEG, notes and a hidden file."""
    root = tmp_path / "photos"
    for n, (name, colour) in enumerate(COLOURS.items()):
        write_image(root / name / f"{n}.png", colour, size=(40, 30), seed=n)
        write_image(root / "more" / name / f"{n}.jpg", colour, seed=10 + n, format="JPEG")
    (root / "more" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    (root / ".thumb.png").write_bytes(b"")
    return root


def test_predict_over_a_nested_folder_writes_csv_rows_and_skips(
    trained_run, photos, tmp_path, capsys
):
    table = tmp_path / "out" / "predictions.csv"
    argv = ["predict", str(trained_run), str(photos), "--csv", str(table), "--top", "2"]
    assert main([*argv, "--workers", "0", "--batch-size", "2"]) == 0
    captured = capsys.readouterr()
    broken = photos / "more" / "broken.jpg"
    assert f"skipping {broken}: cannot decode" in captured.err
    assert captured.out == f"written: {table} (6 images, 1 skipped)\n"
    rows = list(csv.reader(table.open()))
    assert rows[0] == ["path", "class_1", "probability_1", "class_2", "probability_2"]
    images = sorted(str(path) for path in photos.rglob("*.*g") if path.name[0] != ".")
    assert sorted(row[0] for row in rows[1:]) == sorted(set(images) - {str(broken)})
    expected = load(trained_run).predict([row[0] for row in rows[1:]], top=2)
    for row, prediction in zip(rows[1:], expected, strict=True):
        assert row[1::2] == prediction.classes
        assert [float(p) for p in row[2::2]] == pytest.approx(prediction.probabilities, abs=1e-6)


def test_predict_csv_is_safe_in_a_spreadsheet_keeps_a_private_files_mode_and_json_the_names(
    trained_run, tmp_path, capsys
):
    """Images whose names start as a formula (OWASP's six characters), given as relative paths;
    the CSV replaces a file of mode 0600."""
    names = ["=1+1.png", "+1.png", "-1.png", "@SUM(A1).png", "\t1.png", "\r1.png"]
    for name in names:
        write_image(tmp_path / name, COLOURS["red"])
    table, report = tmp_path / "private.csv", tmp_path / "p.json"
    table.write_text("old")
    table.chmod(0o600)
    argv = ["predict", "--csv", str(table), "--json", str(report), "--workers", "0", "--"]
    assert main([*argv, str(trained_run), *names]) == 0
    with open(table, newline="") as file:
        assert [row[0] for row in csv.reader(file)] == ["path", *(f"'{name}" for name in names)]
    assert stat.S_IMODE(table.stat().st_mode) == 0o600
    assert [row["path"] for row in json.loads(report.read_text())["predictions"]] == names
    capsys.readouterr()


def test_an_output_that_cannot_be_written_is_one_line_naming_it(trained_run, colour_tree,
                                                                 tmp_path, capsys):  # fmt: skip
    image = next((colour_tree / "red").iterdir())
    folder = tmp_path / "out.csv"
    folder.mkdir()
    assert main(["predict", str(trained_run), str(image), "--csv", str(folder)]) == 2
    assert one_error_line(capsys) == f"alexnet: error: {folder}: Is a directory"
    assert sorted(os.listdir(tmp_path)) == ["out.csv"] and os.listdir(folder) == []


def test_predict_globs_to_json(trained_run, photos, tmp_path, capsys):
    out = tmp_path / "predictions.json"
    pattern = str(photos / "**" / "*.jpg")
    assert main(["predict", str(trained_run), pattern, "--json", str(out), "--ten-crop"]) == 0
    report = json.loads(out.read_text())
    assert report["skipped"] == [str(photos / "more" / "broken.jpg")]
    assert [row["path"] for row in report["predictions"]] == sorted(
        str(path) for path in (photos / "more").glob("*/*.jpg")
    )
    assert all(
        len(row["classes"]) == len(row["probabilities"]) == 3 for row in report["predictions"]
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--top", "0"], "argument --top: must be >= 1, got 0"),
        (["--top", "-3"], "argument --top: must be >= 1, got -3"),
        (["--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    ],
)
def test_predict_refuses_nonsense_counts(trained_run, photos, extra, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(trained_run), str(photos), *extra])
    assert exit_info.value.code == 2
    assert message in one_error_line(capsys)


def test_predict_names_what_it_cannot_find(trained_run, photos, tmp_path, capsys):
    missing = tmp_path / "missing.jpg"
    assert main(["predict", str(trained_run), str(photos), str(missing)]) == 2
    assert one_error_line(capsys) == f"alexnet: error: {missing}: no such file or folder"
    exported = tmp_path / "model.onnx"
    exported.write_bytes(b"{}")
    assert main(["predict", str(exported), str(photos)]) == 2
    assert "is neither a run folder, a .pt checkpoint" in one_error_line(capsys)
    assert main(["predict", str(exported.rename(exported.with_suffix(".safetensors"))), "x"]) == 2
    assert "is not a readable safetensors file" in one_error_line(capsys)


def test_eval_on_data_with_other_classes(trained_run, tmp_path, capsys):
    for name in ("cats", "dogs"):
        for n in range(4):
            write_image(tmp_path / "other" / name / f"{n}.png", COLOURS["red"], seed=n)
    assert main(["eval", str(trained_run), "--data", str(tmp_path / "other")]) == 2
    assert "has 2 classes that do not match the 3 classes" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "RUN", "--batch-size", "-5"], "argument --batch-size: must be >= 1, got -5"),
        (["train", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
        (["train", "--seed", "-1"], "argument --seed: must be in 0..4294967295, got -1"),
        (["experiment", "relu-vs-tanh", "--out", "x", "--seed", str(2**40)],
         "argument --seed: must be in 0..4294967295, got 1099511627776"),
        (["eval", "RUN", "--workers", "-2"], "argument --workers: must be >= -1, got -2"),
    ],
)  # fmt: skip
def test_counts_below_one_are_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in one_error_line(capsys)


def test_an_out_under_a_file_is_one_line(tmp_path, colour_tree, capsys):
    (tmp_path / "file").write_text("not a folder")
    argv = ["train", "--data", str(colour_tree), "--out", str(tmp_path / "file" / "run"), *TINY]
    assert main(argv) == 2
    assert f"cannot write the run folder {tmp_path / 'file' / 'run'}" in one_error_line(capsys)


def test_disk_full_leaves_no_run_behind(tmp_path, colour_tree, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("alexnet.files.os.fsync", full)  # every atomic write fails
    run = tmp_path / "run"
    assert main(["train", "--data", str(colour_tree), "--out", str(run), *TINY]) == 2
    err = capsys.readouterr().err  # the log's lines so far, then the error
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"alexnet: error: cannot write the run folder {run}: No space left on device "
        f"({run / 'metrics.jsonl'}); no run was left there"
    )
    assert not run.exists()


def test_disk_full_on_resume_keeps_the_last_checkpoint(trained_run, tmp_path, monkeypatch,
                                                       capsys):  # fmt: skip
    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    before = (run / "last.pt").read_bytes()
    monkeypatch.setattr(
        "alexnet.run.checkpoint.torch.save",
        lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")),
    )
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.endswith(
        f"No space left on device ({run / 'last.pt'}); its last checkpoint is kept"
    )  # the file the write was for, not its temporary file
    assert (run / "last.pt").read_bytes() == before
    assert not list(run.glob(".*.tmp"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_out_without_permission_is_one_line(tmp_path, colour_tree, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    argv = ["train", "--data", str(colour_tree), "--out", str(locked / "run"), *TINY]
    assert main(argv) == 2
    assert "Permission denied" in one_error_line(capsys)


def test_a_relative_data_path_is_stored_absolute(tmp_path, colour_tree, monkeypatch, capsys):
    monkeypatch.chdir(colour_tree.parent)
    run = tmp_path / "run"
    argv = ["train", "--data", colour_tree.name, "--out", str(run), *TINY, "--epochs", "1"]
    assert main(argv) == 0
    assert json.loads((run / "recipe.json").read_text())["data"]["source"] == str(colour_tree)
    monkeypatch.chdir(tmp_path)  # another folder: eval and --resume still find the data
    assert main(["eval", "run", "--workers", "0", "--no-progress"]) == 0
    assert main(["train", "--resume", "run", "--epochs", "2", "--no-progress"]) == 0


def test_an_output_is_never_one_of_the_inputs(trained_run, colour_tree, tmp_path, capsys):
    before = {name: (trained_run / name).read_bytes() for name in ("best.pt", "last.pt")}
    (tmp_path / "link.json").symlink_to(trained_run / "best.pt")
    image = next((colour_tree / "red").iterdir())
    os.link(image, tmp_path / "same-image.csv")  # a hard link: another name, the same file
    refused = [
        ["eval", str(trained_run), "--json", str(trained_run / "best.pt")],
        ["eval", str(trained_run), "--json", str(tmp_path / "link.json")],
        ["predict", str(trained_run), str(image), "--csv", str(trained_run / "last.pt")],
        ["predict", str(trained_run), str(image), "--csv", str(tmp_path / "same-image.csv")],
        ["predict", str(trained_run), str(image), "--csv", "x.out", "--json", "x.out"],
        [
            "export",
            str(trained_run),
            "--format",
            "safetensors",
            "--out",
            str(trained_run / "last.pt"),
        ],
    ]
    for argv in refused:
        assert main([*argv, "--workers", "0"] if argv[0] != "export" else argv) == 2, argv
        line = one_error_line(capsys)
        assert "which this command reads" in line or "give two files" in line, line
    assert {name: (trained_run / name).read_bytes() for name in before} == before
    assert not Path("x.out").exists()
