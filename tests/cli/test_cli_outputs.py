"""No output replaces an input: data files (images, a store's, IDX files), a run's own files
(recipe.json, metrics.jsonl, checkpoints), and experiments write only into folders of their own
(files.refuse_overwriting, run/folder.py's files_of_run, data_inputs, claim_experiment)."""

import shutil

import pytest
import torch

from alexnet import files
from alexnet.cli import main
from alexnet.cli.commands import build_parser
from alexnet.train import fit
from tests.test_train import tiny_recipe


@pytest.fixture(scope="module")
def data_and_run(tmp_path_factory, colour_tree):
    """A copy of the colour tree (an output test may not harm the shared one) and a run on it."""
    root = tmp_path_factory.mktemp("outputs")
    data = root / "data"
    shutil.copytree(colour_tree, data)
    fit(tiny_recipe(data, epochs=1), root / "run", progress=False)
    return data, root / "run"


@pytest.fixture(autouse=True)
def _in_a_scratch_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def refused(argv, capsys, *kept):
    """`alexnet ARGV` ends with one error line (exit status 2, no traceback) and every file in
    `kept` is unchanged; returns the line."""
    before = [path.read_bytes() for path in kept]
    assert main([*argv, *(["--no-progress"] if argv[0] in ("eval", "predict") else [])]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("alexnet: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert [path.read_bytes() for path in kept] == before
    return errors[0]


def test_eval_json_over_a_validation_image_is_refused(data_and_run, capsys):
    data, run = data_and_run
    image = data / "red" / "3.png"
    line = refused(["eval", str(run), "--data", str(data), "--json", str(image)], capsys, image)
    assert line == (
        f"alexnet: error: {image} lies inside {data}, which this command reads; write the "
        "output elsewhere"
    )


def test_eval_json_over_the_runs_metrics_is_refused(data_and_run, capsys):
    _, run = data_and_run
    metrics = run / "metrics.jsonl"
    line = refused(["eval", str(run), "--json", str(metrics)], capsys, metrics)
    assert f"{metrics} is {metrics}, which this command reads" in line


def test_export_over_the_runs_recipe_is_refused(data_and_run, capsys):
    _, run = data_and_run
    recipe = run / "recipe.json"
    argv = ["export", str(run), "--format", "safetensors", "--out", str(recipe)]
    assert f"{recipe} is {recipe}, which this command reads" in refused(argv, capsys, recipe)


def test_predict_csv_over_the_runs_recipe_is_refused(data_and_run, capsys):
    data, run = data_and_run
    recipe = run / "recipe.json"
    argv = ["predict", str(run), str(data / "red" / "0.png"), "--csv", str(recipe)]
    assert "which this command reads" in refused(argv, capsys, recipe)


def test_a_run_folder_inside_its_data_is_refused(data_and_run, capsys):
    data, _ = data_and_run
    argv = ["train", "--data", str(data), "--out", str(data / "run"), "--epochs", "1"]
    line = refused([*argv, "--workers", "0", "--no-progress"], capsys)
    assert line == (
        f"alexnet: error: {data / 'run'} lies inside {data}, which this command reads; write "
        "the output elsewhere"
    )
    assert not (data / "run").exists()


def test_an_experiment_into_an_existing_run_is_refused(data_and_run, capsys):
    data, run = data_and_run
    kept = [run / name for name in ("recipe.json", "metrics.jsonl", "last.pt")]
    argv = ["experiment", "relu-vs-tanh", "--data", str(data), "--out", str(run)]
    small = ["--epochs", "1", "--lrs", "0.01", "--target", "0.5", "--workers", "0"]
    line = refused([*argv, *small], capsys, *kept)
    assert line.startswith(f"alexnet: error: {run} is not this experiment's folder (it holds ")
    assert not (run / "relu-vs-tanh.json").exists()


def test_a_batch_size_past_any_memory_is_a_usage_error(data_and_run, capsys):
    data, run = data_and_run
    argv = ["predict", str(run), str(data / "red" / "0.png"), "--batch-size", "9" * 23]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch-size: must be <= 16777216" in err[0], err


def test_resume_with_another_out_or_recipe_is_refused_not_ignored(data_and_run, capsys, tmp_path):
    _, run = data_and_run
    elsewhere = tmp_path / "elsewhere"
    argv = ["train", "--resume", str(run), "--out", str(elsewhere), "--recipe", "paper"]
    line = refused([*argv, "--epochs", "2"], capsys, run / "last.pt", run / "recipe.json")
    assert line == (
        f"alexnet: error: --resume {run} goes on in that folder with its own recipe: drop --out "
        "and --recipe (--epochs and --set run.* may change)"
    )
    assert not elsewhere.exists()


def test_an_export_removes_what_a_killed_export_of_that_file_left(data_and_run, capsys):
    _, run = data_and_run
    left = [run / ".best.safetensors.k1ll3d.tmp", run / ".best.safetensors.x9.tmp"]
    for path in left:
        path.write_bytes(b"half of an export")
    (run / ".notes.tmp").write_text("someone else's")
    assert main(["export", str(run), "--format", "safetensors"]) == 0
    assert not any(path.exists() for path in left)
    assert (run / ".notes.tmp").exists() and (run / "best.safetensors").exists()


def test_class_names_with_control_characters_are_printed_escaped(data_and_run, tmp_path, capsys):
    """A class named with a newline or a terminal's escape sequence cannot forge lines or clear
    the screen of whoever reads predict's output."""
    from alexnet.run import checkpoint

    data, run = data_and_run
    state = checkpoint.load(run / "best.pt")
    state["classes"] = ["blue\x1b[2J", "green\nred: 100.00%", "red"]
    torch.save({key: value for key, value in state.items() if key != "path"}, tmp_path / "x.pt")
    assert main(["predict", str(tmp_path / "x.pt"), str(data / "red" / "0.png"), "--top", "3"]) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "blue\\x1b[2J" in printed
    assert "green\\nred: 100.00%" in printed


@pytest.mark.parametrize("command", [["train"], ["predict", "RUN", "IMAGE"], ["eval", "RUN"]])
def test_a_worker_count_past_any_machine_is_a_usage_error(command, capsys):
    """Parsed only: on main these started 100,000 loader processes."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command, "--workers", "100000"])
    assert exit_info.value.code == 2
    assert "--workers: must be <= 1024, got 100000" in capsys.readouterr().err


def test_eval_json_into_a_named_data_sets_folder_is_refused(data_and_run, capsys):
    """`--data fashion-mnist` names no path; its files are read from the cache folder."""
    _, run = data_and_run
    idx = files.cache_dir("downloads") / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    idx.parent.mkdir(parents=True, exist_ok=True)
    idx.write_bytes(b"an IDX file")
    try:
        argv = ["eval", str(run), "--data", "fashion-mnist", "--json", str(idx)]
        assert "which this command reads" in refused(argv, capsys, idx)
    finally:
        idx.unlink()


def test_eval_json_over_a_stores_file_is_refused(data_and_run, tmp_path, capsys):
    """The store a run is evaluated on is data too: `--json STORE/val.bin` once answered
    "written" and destroyed the store."""
    from alexnet.data import open_source
    from alexnet.data.store.prepare import Settings, prepare_store
    from alexnet.recipe import load_recipe

    data, run = data_and_run
    recipe = load_recipe(str(run / "recipe.json"))
    store = tmp_path / "store"
    settings = Settings(str(data), recipe.data.image_size, val_fraction=recipe.data.val_fraction)
    prepare_store(open_source(str(data), val_fraction=recipe.data.val_fraction), store, settings,
                  workers=0, progress=False)  # fmt: skip
    values = store / "val.bin"
    line = refused(["eval", str(run), "--data", str(store), "--json", str(values)], capsys, values)
    assert line.startswith(f"alexnet: error: {values} ") and "reads" in line
