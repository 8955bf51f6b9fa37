"""Checkpoints: atomic writes, safe loading, clear refusals, RNG state round trip."""

import errno
import io
import os
import random

import numpy as np
import pytest
import torch

from alexnet import AlexNet, files
from alexnet.cli import main
from alexnet.recipe import preset
from alexnet.run import checkpoint
from alexnet.run.checkpoint import CheckpointError
from alexnet.run.state import finite, restore_rng_states, rng_states
from alexnet.train import fit
from tests.test_train import tiny_recipe


def minimal_state(variant="paper", classes=("a", "b", "c")):
    recipe = preset("paper")
    recipe.model.variant = variant
    model = AlexNet(len(classes), variant=variant)
    return {
        "model": model.state_dict(),
        "recipe": recipe.to_dict(),
        "classes": list(classes),
        "epoch": 1,
        "data_stats": valid_stats(recipe.data.image_size),
    }


def valid_stats(size: int) -> dict:
    return {
        "image_size": size,
        "mean_image": torch.full((3, size, size), 100.0),
        "channel_std": torch.tensor([50.0, 50.0, 50.0]),
        "eigenvalues": torch.tensor([3.0, 2.0, 1.0]),
        "eigenvectors": torch.eye(3),
    }


def test_round_trip_rebuilds_the_same_network(tmp_path):
    state = minimal_state()
    checkpoint.save_atomically(state, tmp_path / "last.pt")
    loaded = checkpoint.load(tmp_path)  # a run folder means its last.pt
    model = checkpoint.build_model(loaded)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_a_network_built_from_a_checkpoint_draws_no_init_and_trains(tmp_path):
    state = minimal_state()
    checkpoint.save_atomically(state, tmp_path / "last.pt")
    loaded = checkpoint.load(tmp_path / "last.pt")  # its tensors mapped from the file
    torch.manual_seed(0)
    model = checkpoint.build_model(loaded)
    drawn_after = torch.rand(4)
    torch.manual_seed(0)
    assert torch.equal(drawn_after, torch.rand(4))  # building drew nothing: no init
    fc8 = model.learned_layers()["fc8"]
    with torch.no_grad():
        fc8.weight.add_(1.0)  # a private mapping: the file stays as written
    assert torch.equal(checkpoint.load(tmp_path / "last.pt")["model"]["classifier.6.weight"],
                       state["model"]["classifier.6.weight"])  # fmt: skip


def test_a_checkpoint_of_the_legacy_format_still_loads(tmp_path):
    state = minimal_state()  # written by torch.save before zip files: it cannot be mapped
    torch.save(state, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    model = checkpoint.build_model(checkpoint.load(tmp_path / "old.pt"))
    assert torch.equal(model.learned_layers()["fc8"].weight, state["model"]["classifier.6.weight"])


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save_atomically({**minimal_state(), "marker": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        checkpoint.save_atomically({**minimal_state(), "bad": Unpicklable()}, path)
    assert checkpoint.load(path)["marker"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_dict_without_the_checkpoint_keys_is_refused(tmp_path):
    torch.save({"model": {}, "recipe": {}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not an alexnet checkpoint .no classes, epoch"):
        checkpoint.load(tmp_path / "x.pt")


def test_a_run_folder_means_best_or_last(tmp_path):
    checkpoint.save_atomically({**minimal_state(), "epoch": 2}, tmp_path / "last.pt")
    assert checkpoint.load(tmp_path, prefer="best.pt")["path"].endswith("last.pt")
    checkpoint.link_atomically(tmp_path / "last.pt", tmp_path / "best.pt")
    checkpoint.save_atomically({**minimal_state(), "epoch": 3}, tmp_path / "last.pt")
    assert checkpoint.load(tmp_path, prefer="best.pt")["epoch"] == 2  # the link kept epoch 2
    assert checkpoint.load(tmp_path)["epoch"] == 3


class Payload:
    """What a malicious pickle does: run a command when it is loaded."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("payload", [np.random.RandomState(0), Payload()])
def test_loading_never_unpickles_objects(tmp_path, monkeypatch, payload, capfd):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "recipe": {}, "payload": payload}, path)
    with pytest.raises(CheckpointError) as error:
        checkpoint.load(path)
    assert str(error.value) == (
        f"{path} is not an alexnet checkpoint and was refused: it holds objects other than "
        "tensors and plain values (nothing in it was run)"
    )
    assert not (tmp_path / "PWNED").exists()
    assert capfd.readouterr().err == ""  # no warning from torch advising weights_only=False


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", None])
def test_corrupt_or_missing_files_are_refused_in_one_line(tmp_path, content):
    path = tmp_path / "last.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        checkpoint.load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save_atomically(minimal_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(path)


def test_checkpoint_of_another_variant_is_refused(tmp_path):
    checkpoint.save_atomically(minimal_state("paper"), tmp_path / "best.pt")
    state = checkpoint.load(tmp_path / "best.pt")
    recipe = checkpoint.recipe_of(state)
    recipe.model.variant = "owt"
    with pytest.raises(CheckpointError, match="holds a 'paper' AlexNet, not the 'owt' variant"):
        checkpoint.build_model(state, recipe)


def test_checkpoint_with_other_shapes_is_refused(tmp_path):
    state = minimal_state()
    state["classes"] = ["a", "b"]  # the saved fc8 has three outputs
    checkpoint.save_atomically(state, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="does not fit this network"):
        checkpoint.build_model(checkpoint.load(tmp_path / "x.pt"))


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    checkpoint.save_atomically({**minimal_state(), "rng": rng_states()}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    restore_rng_states(checkpoint.load(tmp_path / "r.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1]) and got[2] == expected[2]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s: s["data_stats"].update(mean_image=torch.zeros(3, 8, 8)),
            r"data_stats.mean_image is \(3, 8, 8\), expected \(3, 256, 256\)",
        ),
        (lambda s: s["data_stats"].pop("channel_std"), "data_stats.channel_std is missing"),
        (
            lambda s: s["data_stats"].update(channel_std=torch.tensor([1.0, 0.0, 1.0])),
            "channel_std must be > 0",
        ),
        (
            lambda s: s["data_stats"]["eigenvalues"].fill_(float("nan")),
            "data_stats.eigenvalues holds values that are not finite",
        ),
        (lambda s: s["data_stats"].update(image_size=2**40), "data_stats.image_size=1099511627776"),
        (lambda s: s.update(classes="abc"), "classes is not a list of class names"),
        (lambda s: s.update(epoch=-1), "epoch=-1 is not a whole number >= 0"),
        (lambda s: s.update(model=[1, 2]), "model is not a dictionary of tensors"),
        (
            lambda s: s["recipe"]["data"].update(image_size=240),
            "data_stats are of 256 px images, its recipe's data.image_size is 240",
        ),
    ],
)
def test_every_value_read_from_a_checkpoint_is_checked_at_load(change, message, tmp_path):
    state = {**minimal_state(), "model": {"features.0.weight": torch.zeros(1)}}  # small file
    change(state)
    checkpoint.save_atomically(state, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=message) as error:
        checkpoint.load(tmp_path / "last.pt")
    assert str(tmp_path / "last.pt") in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), None])
def test_the_weight_check_agrees_with_isfinite(bad):
    """A checkpoint is refused when any weight is NaN or infinite: the cheap check (sums)
    against torch.isfinite on every value."""
    network = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 3))
    if bad is not None:
        with torch.no_grad():
            network[1].weight[2, 1] = bad
    expected = all(torch.isfinite(weight).all() for weight in network.parameters())
    assert finite(network) == expected == (bad is None)


def test_a_full_disk_while_last_pt_is_written_is_one_line_and_keeps_the_one_before(
    tmp_path, colour_tree, monkeypatch, capsys
):
    """The disk fills while epoch 2's last.pt is written: torch's zip writer turned the
    failed write into a RuntimeError of its own (a traceback); now one line, and epoch 1's
    checkpoint still loads."""
    run = tmp_path / "run"
    fit(tiny_recipe(colour_tree, epochs=1), run, progress=False)

    class FullDisk(io.FileIO):
        def write(self, data):
            if self.tell() + len(data) > 2**20:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(data)

    monkeypatch.setattr(files.os, "fdopen", lambda handle, mode: FullDisk(handle, "w"))
    argv = ["train", "--resume", str(run), "--epochs", "2", "--no-progress"]
    assert main([*argv, "--set", "run.report=false"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"alexnet: error: cannot write the run folder {run}: No space left")
    assert line.endswith("; its last checkpoint is kept")
    monkeypatch.undo()
    assert checkpoint.load(run)["epoch"] == 1
    assert not list(run.glob(".*.tmp"))


def test_a_checkpoint_naming_one_class_twice_is_refused(tmp_path):
    """The name café as one character and as two: one name to a reader, two labels to a net."""
    state = minimal_state(classes=("tea", "caf\u00e9", "cafe\u0301"))
    state["model"] = {"features.0.weight": torch.zeros(1)}  # a small file
    checkpoint.save_atomically(state, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="classes holds one name twice"):
        checkpoint.load(tmp_path / "last.pt")
