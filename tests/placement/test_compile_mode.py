"""run.compile_mode: torch.compile's mode reaches the step model on CUDA, stays off on a CPU,
and only torch's modes pass the recipe's check."""

import pytest
import torch
from torch import nn

from alexnet.placement import Placement
from alexnet.recipe import Recipe, RecipeError, RunRecipe, apply_overrides


def test_the_mode_reaches_torch_compile(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **options: calls.append(options) or model)
    model = nn.Linear(2, 2)
    placement = Placement(torch.device("cpu"), compile=True, compile_mode="reduce-overhead")
    assert placement.step_model(model) is model
    assert calls == [{"mode": "reduce-overhead"}]
    assert placement.description == " (compiled reduce-overhead)"


def test_on_a_cpu_nothing_is_compiled_whatever_the_mode(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda *a, **o: pytest.fail("compiled on a CPU"))
    placement = Placement.for_run(RunRecipe(compile=True, compile_mode="max-autotune"), "cpu")
    assert not placement.compile and placement.description == ""
    placement.step_model(nn.Linear(2, 2))


def test_only_torch_compiles_modes_are_accepted():
    recipe = apply_overrides(Recipe(), ["run.compile_mode=reduce-overhead"])
    assert recipe.run.compile_mode == "reduce-overhead"
    assert Recipe.from_dict(recipe.to_dict()).run.compile_mode == "reduce-overhead"
    assert Recipe().run.compile_mode == "default"
    with pytest.raises(RecipeError, match="compile_mode"):
        apply_overrides(Recipe(), ["run.compile_mode=fast"])
