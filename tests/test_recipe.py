"""Recipes: the paper's values as defaults, presets, type-checked overrides, JSON round trip."""

import json

import pytest

from alexnet.recipe import (
    PRESETS,
    Recipe,
    RecipeError,
    apply_overrides,
    assign,
    load_recipe,
    preset,
)


def test_paper_preset_holds_the_papers_values():
    recipe = preset("paper")
    assert (recipe.data.image_size, recipe.data.crop_size) == (256, 224)  # §2, §4.1
    assert recipe.data.pca_lighting and recipe.data.flip and recipe.data.lighting_std == 0.1
    assert recipe.data.input_scale == "raw"
    assert (recipe.optim.batch_size, recipe.optim.lr) == (128, 0.01)  # §5
    assert (recipe.optim.momentum, recipe.optim.weight_decay) == (0.9, 0.0005)
    assert (recipe.schedule.epochs, recipe.schedule.lr_drop, recipe.schedule.max_drops) == (
        90,
        10.0,
        3,
    )
    assert recipe.model.variant == "paper" and recipe.model.lrn == "paper"
    assert recipe.model.dropout == 0.5 and recipe.model.init == "paper"


def test_small_data_presets_name_their_departures():
    for name in ("digits", "cifar10"):
        recipe = preset(name)
        assert recipe.model.init == "kaiming" and recipe.data.input_scale == "standardised"
        assert recipe.data.crop_size >= 63
    assert preset("digits").data.source == "digits"
    assert not preset("digits").data.flip


def test_presets_are_fresh_copies():
    preset("paper").optim.lr = 1.0
    assert preset("paper").optim.lr == 0.01


def test_overrides_are_parsed_to_the_fields_type():
    recipe = apply_overrides(
        preset("paper"),
        [
            "optim.lr=0.02",
            "optim.batch_size=64",
            "data.flip=false",
            "model.lrn=cuda-convnet",
            "data.source=cifar10:/x",
            "optim.weight_decay=0",
        ],
    )
    assert recipe.optim.lr == 0.02 and isinstance(recipe.optim.lr, float)
    assert recipe.optim.batch_size == 64 and recipe.data.flip is False
    assert recipe.model.lrn == "cuda-convnet" and recipe.data.source == "cifar10:/x"
    assert recipe.optim.weight_decay == 0.0 and isinstance(recipe.optim.weight_decay, float)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("optim.momentum_x=1", "unknown recipe key 'optim.momentum_x'"),
        ("nosuch.lr=1", "unknown recipe key 'nosuch.lr'"),
        ("optim=1", "unknown recipe key 'optim'"),
        ("optim.batch_size=12.5", "optim.batch_size='12.5': expected int"),
        ("optim.lr=fast", "optim.lr='fast': expected float"),
        ("data.flip=maybe", "data.flip='maybe': expected a boolean"),
        (
            "model.variant=vgg",
            "model.variant='vgg': expected one of 'paper', 'one-tower', 'half-width', 'owt'",
        ),
        ("optim.lr", "expected section.key=value"),
        ("optim.lr=inf", "optim.lr=inf: must be a finite number"),
        ("model.dropout=nan", "model.dropout=nan: must be a finite number"),
        ("data.image_size=1000000", "data.image_size=1000000: must be <= 4096"),
        ("run.seed=-1", "run.seed=-1: must be in 0..4294967295"),
        ("run.seed=4294967296", "run.seed=4294967296: must be in 0..4294967295"),
        ("data.split_seed=-3", "data.split_seed=-3: must be in 0..4294967295"),
        ("schedule.warmup_epochs=1.5", "schedule.warmup_epochs=1.5: must be between 0 and 1"),
    ],
)
def test_bad_overrides_name_the_key(assignment, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_overrides(preset("paper"), [assignment])


def test_unknown_preset():
    with pytest.raises(RecipeError, match="unknown recipe 'imagenet'; choose one of: paper"):
        preset("imagenet")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(name):
    recipe = preset(name)
    assert Recipe.from_dict(json.loads(recipe.to_json())) == recipe


def test_from_dict_type_checks_too():
    values = preset("paper").to_dict()
    values["optim"]["batch_size"] = "many"
    with pytest.raises(RecipeError, match="optim.batch_size"):
        Recipe.from_dict(values)


HUGE = "9" * 5000  # past Python's 4,300-digit limit for int() and repr()


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("schedule.epochs=" + HUGE, r"schedule.epochs='9{29}\.\.\. \(5002 characters\): expected"),
        ("schedule.epochs=1000000000", "schedule.epochs=1000000000: must be <= 100000"),
        ("schedule.lr_drop=1e308", "is 1e-926: the lowest ε must be >= 1e-30"),
        ("schedule.max_drops=400", "max_drops=400 times is 1e-402: the lowest ε must be >= 1e-30"),
        ("optim.lr=5e-324", "max_drops=3 times is 1e-326: the lowest ε must be >= 1e-30"),
        (
            "optim.batch_size=99999999999999999999999",
            "optim.batch_size=99999999999999999999999: must be <= 16777216",
        ),
        ("run.workers=100000", "run.workers=100000: must be <= 1024"),
    ],
)
def test_hostile_values_are_refused_in_one_short_line(assignment, message):
    with pytest.raises(RecipeError, match=message) as error:
        apply_overrides(preset("paper"), [assignment])
    assert "\n" not in str(error.value) and len(str(error.value)) < 200


def test_a_number_past_the_digit_limit_is_named_not_printed():
    with pytest.raises(RecipeError, match="schedule.epochs=a number of more than 4300 digits"):
        assign(preset("paper"), {"schedule.epochs": 10**5000})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"optim": {"lr": ' + "1" * 400 + "}}", "optim.lr=inf: must be a finite number"),
        ('{"schedule": {"epochs": ' + HUGE + "}}", "is not valid JSON: Exceeds the limit"),
        ('{"optim": ' + "[" * 100_000 + "]" * 100_000 + "}", "is not valid JSON: nested too deep"),
    ],
)
def test_a_hostile_recipe_file_is_one_line(tmp_path, content, message):
    path = tmp_path / "recipe.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(RecipeError, match=message) as error:
        load_recipe(str(path))
    assert "\n" not in str(error.value) and len(str(error.value)) < 300
