"""Fast paths decided once (placement/): the recipe's run.native_kernels, run.tower_convs and
run.keep_freed_memory resolved into the Placement, applied to the network it places, and
recorded in the run's recipe.json."""

from __future__ import annotations

import dataclasses
import json

import pytest

import alexnet.placement.placement as placement_module
from alexnet import native
from alexnet.model import AlexNet, LocalResponseNorm, TowerConv2d
from alexnet.placement import Placement
from alexnet.placement.kernels import build_kernels
from alexnet.recipe import RecipeError, RunRecipe, apply_overrides, preset
from alexnet.train import fit


def layers(model):
    lrns = [m.native_kernels for m in model.modules() if isinstance(m, LocalResponseNorm)]
    towers = [m.split for m in model.modules() if isinstance(m, TowerConv2d)]
    return set(lrns), set(towers)


def test_auto_takes_the_kernels_where_they_build_and_groups_the_towers_on_a_cpu():
    placement = Placement.for_run(RunRecipe(), "cpu")
    assert placement.native_kernels == build_kernels(required=False)
    assert not placement.split_towers and placement.keep_freed_memory
    resolved = placement.resolved(RunRecipe())
    assert resolved.native_kernels == ("on" if placement.native_kernels else "off")
    assert resolved.tower_convs == "grouped"
    placed = placement.model(AlexNet(num_classes=4))
    assert layers(placed) == ({placement.native_kernels}, {False})


def test_each_field_forces_its_path():
    run = RunRecipe(native_kernels="off", tower_convs="split", keep_freed_memory=False)
    placement = Placement.for_run(run, "cpu")
    assert (placement.native_kernels, placement.split_towers) == (False, True)
    assert not placement.keep_freed_memory
    assert layers(placement.model(AlexNet(num_classes=4))) == ({False}, {True})
    assert placement.resolved(run) == dataclasses.replace(run, tower_convs="split")


def test_on_without_a_compiler_is_one_line_and_auto_falls_back(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(native, "_loaded", {})
    with pytest.raises(native.KernelError, match="run.native_kernels=on") as error:
        Placement.for_run(RunRecipe(native_kernels="on"), "cpu")
    assert "\n" not in str(error.value)
    assert not Placement.for_run(RunRecipe(native_kernels="auto"), "cpu").native_kernels
    assert "using torch operations" in caplog.text


def test_the_allocator_setting_is_made_by_prepare_only_when_asked(monkeypatch):
    applied = []
    monkeypatch.setattr(placement_module, "keep_freed_memory", lambda: applied.append(True))
    Placement.for_run(RunRecipe(keep_freed_memory=False), "cpu").prepare()
    assert applied == []
    Placement.for_run(RunRecipe(), "cpu").prepare()
    assert applied == [True]


def test_the_recipe_fields_are_checked_like_any_other():
    with pytest.raises(RecipeError, match="run.native_kernels"):
        apply_overrides(preset("digits"), ["run.native_kernels=maybe"])
    with pytest.raises(RecipeError, match="run.tower_convs"):
        apply_overrides(preset("digits"), ["run.tower_convs=three"])


def test_fit_records_the_paths_it_took_in_recipe_json(tmp_path, colour_tree):
    recipe = apply_overrides(
        preset("digits"),
        [f"data.source={colour_tree}", "schedule.epochs=1", "optim.batch_size=8",
         "run.workers=0", "data.val_fraction=0.25", "run.report=false"],
    )  # fmt: skip
    fit(recipe, tmp_path / "run", progress=False)
    written = json.loads((tmp_path / "run" / "recipe.json").read_text())["run"]
    expected = "on" if build_kernels(required=False) else "off"
    assert (written["native_kernels"], written["tower_convs"]) == (expected, "grouped")
    # The file repeats the run: the resolved fields are valid values of their own.
    again = apply_overrides(preset("digits"), [f"run.native_kernels={expected}"])
    assert again.run.native_kernels == expected
