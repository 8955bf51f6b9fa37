"""The training recipe: every hyper-parameter, with the paper's value as default (§2-§5).

A recipe is a tree of dataclasses. Named presets (`paper`, `digits`, `cifar10`) start from the
paper's values and change only what a smaller data set needs; `--set section.key=value`
overrides any field, type-checked. The resolved recipe is saved as `recipe.json` in a run and
inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alexnet.errors import UserError

MIN_CROP = 63  # the smallest input the paper's net passes through (model.py)
MAX_IMAGE_SIZE = 4096  # 16× the paper's 256: larger asks for a mean image of hundreds of MB
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit
MAX_EPOCHS = 100_000  # 1,000 times the paper's 90: beyond it a count is a typo
MAX_BATCH = 2**24  # images per batch: far past any device's memory
MAX_WORKERS = 1024  # loader processes: beyond it the machine runs out of processes first
MIN_LR = 1e-30  # the lowest ε a schedule may reach: below it steps underflow to zero


class RecipeError(UserError):
    """A preset, override or recipe file that cannot be used; the message names the culprit."""


@dataclass
class ModelRecipe:
    variant: Literal["paper", "one-tower", "half-width", "owt"] = "paper"  # §3.2: two towers
    activation: Literal["relu", "tanh"] = "relu"  # §3.1: ReLU after every learned layer
    lrn: Literal["paper", "cuda-convnet", "off"] = "paper"  # §3.3: α convention, or no LRN
    overlapping_pool: bool = True  # §3.4: z=3, s=2 (False: z=s=2)
    dropout: float = 0.5  # §4.2: on the outputs of fc6 and fc7
    init: Literal["paper", "kaiming"] = "paper"  # §5: N(0, 0.01), biases 1 in conv2/4/5, fc6/7


@dataclass
class DataRecipe:
    source: str = "data/imagenet"  # §2: digits | cifar10:PATH | fashion-mnist | mnist | folders
    image_size: int = 256  # §2: shorter side rescaled to 256, centre 256×256 kept
    crop_size: int = 224  # §4.1: random 224×224 patches for training, centre for testing
    flip: bool = True  # §4.1: horizontal reflections
    pca_lighting: bool = True  # §4.1: PCA colour augmentation
    lighting_std: float = 0.1  # §4.1: αᵢ ~ N(0, 0.1)
    input_scale: Literal["raw", "standardised"] = "raw"  # §2: raw RGB minus the mean image
    val_fraction: float = 0.1  # held out of a single image-folder tree (seeded, stratified)
    split_seed: int = 0  # that split's seed, and the digits test split's: fixed across runs
    train_subset: int = 0  # 0: every training image; N: a fixed subset of N, drawn with split_seed


@dataclass
class OptimRecipe:
    lr: float = 0.01  # §5: ε, one rate for all layers
    momentum: float = 0.9  # §5
    weight_decay: float = 0.0005  # §5: inside the velocity, scaled by ε
    batch_size: int = 128  # §5


@dataclass
class ScheduleRecipe:
    epochs: int = 90  # §5: "roughly 90 cycles"
    lr_drop: float = 10.0  # §5: ε divided by 10 when validation error stops improving
    patience: int = 5  # epochs without a better validation top-1 error before a drop
    max_drops: int = 3  # §5: reduced three times before termination
    warmup_epochs: float = 0.0  # not in the paper: ε rises linearly over this share of epoch 1
    shape: Literal["plateau", "linear"] = "plateau"  # §5: ÷lr_drop on a plateau; or, not in the
    # paper, a linear fall to 0 over the run after the warm-up, for runs too short for a plateau


@dataclass
class RunRecipe:
    device: str = "auto"  # cuda if available, else cpu; or any torch device string
    seed: int = 0  # seeds torch, numpy, random and every loader worker
    workers: int = -1  # data-loading processes; -1: one per CPU core
    gpu_decode: bool = True  # CUDA: decode a prepared store's JPEGs in batches on the GPU
    bf16: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # channels_last memory format on CUDA (ignored on CPU)
    compile: bool = True  # torch.compile the model on CUDA (ignored on CPU: no speed-up there)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"  # its mode:
    # "reduce-overhead" replays forward and backward as CUDA graphs; bench_device_step.py decides
    tensorboard: bool = False  # also log each epoch to run_dir/tensorboard (the tensorboard extra)
    model_parallel: str = ""  # §3.2: "DEV_A,DEV_B" puts tower one on DEV_A, tower two on DEV_B
    report: bool = True  # `alexnet train` writes report.html after training (analysis/report.py)
    # Fast paths: how the same arithmetic runs, never what it computes; "auto" is resolved once
    # per run (placement/) and recipe.json records the resolution.
    native_kernels: Literal["auto", "on", "off"] = "auto"  # the CPU's compiled C kernels (LRN,
    # a batch's arithmetic; the bits of torch's operations); auto: on a CPU, where cc builds them
    tower_convs: Literal["auto", "split", "grouped"] = "auto"  # §3.2's towers in conv2/4/5 as two
    # convolutions or one grouped one; auto: split on CUDA, grouped elsewhere
    keep_freed_memory: bool = True  # CPU: glibc keeps freed blocks for the next step, so large
    # tensors are not page-faulted in anew every step (host_memory.py); set by fit and the CLI


@dataclass
class Recipe:
    name: str = "paper"
    model: ModelRecipe = field(default_factory=ModelRecipe)
    data: DataRecipe = field(default_factory=DataRecipe)
    optim: OptimRecipe = field(default_factory=OptimRecipe)
    schedule: ScheduleRecipe = field(default_factory=ScheduleRecipe)
    run: RunRecipe = field(default_factory=RunRecipe)

    def validate(self) -> Recipe:
        """Check the values' ranges; raise RecipeError naming the first field out of range.
        Every number is finite; sizes and seeds stay within what the machine and numpy take."""
        for section in (self.model, self.data, self.optim, self.schedule, self.run):
            for name, value in dataclasses.asdict(section).items():
                if isinstance(value, float) and not math.isfinite(value):
                    path = f"{type(section).__name__.removesuffix('Recipe').lower()}.{name}"
                    raise RecipeError(f"{path}={shown(value)}: must be a finite number")
        checks = [
            ("model.dropout", 0 <= self.model.dropout < 1, "in [0, 1)"),
            ("data.crop_size", self.data.crop_size >= MIN_CROP, f">= {MIN_CROP} (model.py)"),
            ("data.image_size", self.data.image_size >= self.data.crop_size, ">= data.crop_size"),
            ("data.image_size", self.data.image_size <= MAX_IMAGE_SIZE, f"<= {MAX_IMAGE_SIZE}"),
            ("data.split_seed", 0 <= self.data.split_seed <= MAX_SEED, f"in 0..{MAX_SEED}"),
            ("data.train_subset", self.data.train_subset >= 0, ">= 0 (0: every image)"),
            ("data.lighting_std", self.data.lighting_std >= 0, ">= 0"),
            ("data.val_fraction", 0 < self.data.val_fraction < 1, "in (0, 1)"),
            ("optim.lr", self.optim.lr > 0, "> 0"),
            ("optim.momentum", 0 <= self.optim.momentum < 1, "in [0, 1)"),
            ("optim.weight_decay", self.optim.weight_decay >= 0, ">= 0"),
            ("optim.batch_size", self.optim.batch_size >= 1, ">= 1"),
            ("optim.batch_size", self.optim.batch_size <= MAX_BATCH, f"<= {MAX_BATCH}"),
            ("schedule.epochs", self.schedule.epochs >= 1, ">= 1"),
            ("schedule.epochs", self.schedule.epochs <= MAX_EPOCHS, f"<= {MAX_EPOCHS}"),
            ("schedule.lr_drop", self.schedule.lr_drop > 1, "> 1"),
            ("schedule.patience", self.schedule.patience >= 0, ">= 0"),
            ("schedule.patience", self.schedule.patience <= MAX_EPOCHS, f"<= {MAX_EPOCHS}"),
            ("schedule.max_drops", self.schedule.max_drops >= 0, ">= 0"),
            ("schedule.max_drops", self.schedule.max_drops <= MAX_EPOCHS, f"<= {MAX_EPOCHS}"),
            ("schedule.warmup_epochs", 0 <= self.schedule.warmup_epochs <= 1, "between 0 and 1"),
            ("run.workers", self.run.workers >= -1, ">= -1 (-1: one per core)"),
            ("run.workers", self.run.workers <= MAX_WORKERS, f"<= {MAX_WORKERS}"),
            ("run.seed", 0 <= self.run.seed <= MAX_SEED, f"in 0..{MAX_SEED}"),
        ]
        for path, ok, expected in checks:
            if not ok:
                section, _, key = path.partition(".")
                value = getattr(getattr(self, section), key)
                raise RecipeError(f"{path}={shown(value)}: must be {expected}")
        schedule = self.schedule
        lowest = math.log10(self.optim.lr) - schedule.max_drops * math.log10(schedule.lr_drop)
        if lowest < math.log10(MIN_LR):
            raise RecipeError(
                f"optim.lr={self.optim.lr:g} divided by schedule.lr_drop={schedule.lr_drop:g} "
                f"schedule.max_drops={schedule.max_drops} times is 1e{lowest:.0f}: the lowest "
                f"ε must be >= {MIN_LR:g}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Recipe:
        recipe = cls(name=str(values.get("name", "custom")))
        for section_name, section_values in values.items():
            if section_name == "name":
                continue
            for key, value in dict(section_values).items():
                _assign(recipe, f"{section_name}.{key}", value)
        return recipe.validate()


def _small_data(recipe: Recipe) -> None:
    """Shared by the small-data presets: the paper's net at 64 px, trained in minutes.

    docs/paper.md §5, "Learning": the paper's init assumes ImageNet's raw 0-255 scale; on small
    data it stays at chance for many epochs, so these presets use Kaiming init and standardised
    inputs.
    """
    recipe.model.init = "kaiming"
    recipe.data.input_scale = "standardised"
    recipe.data.image_size = 72
    recipe.data.crop_size = 64


def _paper() -> Recipe:
    return Recipe(name="paper")


def _digits() -> Recipe:
    recipe = Recipe(name="digits")
    _small_data(recipe)
    recipe.data.source = "digits"
    recipe.data.flip = False  # a mirrored digit is another glyph
    recipe.data.pca_lighting = False  # grey images: one colour axis only
    # The demo's recipe (`make demo`): the paper's net (both towers, LRN, overlapping pools,
    # dropout) in about a minute on 2 CPU cores. Each value below was chosen by held-out error
    # over seeds 0-2: docs/measurements.md, "The digits recipe".
    recipe.data.image_size = 64  # = the crop: 8×8 digits blown up need no translation jitter,
    # and 64 px is the net's cheapest input (conv5 pools to 1×1)
    recipe.optim.batch_size = 32  # the net needs steps more than images
    recipe.optim.lr = 0.007  # 0.01 and 0.005 ended worse; 0.02 never settled
    recipe.schedule.warmup_epochs = 1.0  # at full ε from step 1 the net sat at chance an epoch
    recipe.schedule.shape = "linear"  # at a constant ε (no plateau in 5 epochs) the error wanders
    recipe.schedule.epochs = 5  # 4 leave no margin
    recipe.run.workers = 0  # digits decode from memory: worker processes would take the 2 cores
    return recipe


def _cifar10() -> Recipe:
    recipe = Recipe(name="cifar10")
    _small_data(recipe)
    recipe.data.source = "cifar10:data/cifar-10-batches-py"
    recipe.schedule.epochs = 30
    recipe.schedule.patience = 3
    return recipe


def _fashion_mnist() -> Recipe:
    """All 60,000 Fashion-MNIST photos (28×28 grey, 10 classes), the official 10,000 test images
    held out: the digits recipe's settings, with flips (a mirrored garment is the same
    garment). Each value from runs fm1 and fm2 on a 2-core CPU (docs/measurements.md, "The
    fashion-mnist recipe")."""
    recipe = Recipe(name="fashion-mnist")
    _small_data(recipe)
    recipe.data.source = "fashion-mnist"
    recipe.data.image_size = 64  # = the crop, as for digits: the net's cheapest input
    recipe.data.pca_lighting = False  # grey images: one colour axis only
    recipe.optim.batch_size = 64  # 60,000 images: an epoch in minutes on a CPU
    recipe.optim.lr = 0.007  # the digits rate, then ε/10 at the plateau
    recipe.schedule.epochs = 8  # fm2 passed 10% held-out error after 6
    recipe.schedule.patience = 1  # with 2 (fm1) ε had not dropped after 6 epochs
    recipe.run.workers = 0  # the images are in memory: workers would take the 2 cores
    return recipe


PRESETS = {
    "paper": _paper,
    "digits": _digits,
    "cifar10": _cifar10,
    "fashion-mnist": _fashion_mnist,
}


def preset(name: str) -> Recipe:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise RecipeError(f"unknown recipe {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()


def load_recipe(name_or_file: str) -> Recipe:
    """A named preset, or a recipe JSON file (a run's own `recipe.json` repeats that run)."""
    if name_or_file in PRESETS or not name_or_file.endswith(".json"):
        return preset(name_or_file)
    try:
        values = json.loads(Path(name_or_file).read_text())
    except OSError as error:
        raise RecipeError(f"cannot read recipe file {name_or_file}: {error.strerror}") from None
    except (ValueError, RecursionError) as error:  # not JSON or UTF-8, a huge number, too deep
        reason = "nested too deep" if isinstance(error, RecursionError) else error
        raise RecipeError(f"recipe file {name_or_file} is not valid JSON: {reason}") from None
    if not isinstance(values, dict):
        raise RecipeError(f"recipe file {name_or_file} does not hold a JSON object")
    try:
        return Recipe.from_dict(values)
    except (TypeError, ValueError) as error:  # a section that is not an object
        raise RecipeError(f"recipe file {name_or_file}: {error}") from None


def assign(recipe: Recipe, fields: dict[str, Any]) -> Recipe:
    """Set typed values ("section.key": value), each checked against its field; then validate.
    The CLI's flags arrive here as the values argparse parsed, never as text."""
    for path, value in fields.items():
        _assign(recipe, path, value)
    return recipe.validate()


def apply_overrides(recipe: Recipe, assignments: list[str]) -> Recipe:
    """Apply `section.key=value` strings in order, each type-checked against the field."""
    for assignment in assignments:
        path, sep, text = assignment.partition("=")
        if not sep:
            raise RecipeError(f"--set {assignment!r}: expected section.key=value")
        _assign(
            recipe,
            path.strip(),
            _parse(path.strip(), text.strip(), _field_type(recipe, path.strip())),
        )
    return recipe.validate()


def _field_type(recipe: Recipe, path: str) -> Any:
    section_name, _, key = path.partition(".")
    section = getattr(recipe, section_name, None)
    if not key or not dataclasses.is_dataclass(section):
        raise RecipeError(f"unknown recipe key {path!r}; sections: {', '.join(_sections())}")
    hints = typing.get_type_hints(type(section))
    if key not in hints:
        raise RecipeError(f"unknown recipe key {path!r}; {section_name} has: {', '.join(hints)}")
    return hints[key]


def _sections() -> list[str]:
    return [f.name for f in dataclasses.fields(Recipe) if f.name != "name"]


def _parse(path: str, text: str, kind: Any) -> Any:
    """Turn override text into a value of the field's type, or say why not."""
    if kind is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise RecipeError(f"{path}={text!r}: expected a boolean (true/false)")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise RecipeError(f"{path}={shown(text)}: expected {kind.__name__}") from None
    return text


def shown(value: Any) -> str:
    """`value`'s repr for a one-line message, cut to 40 characters (a 5,000-digit number)."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's 4,300-digit limit for str()
        return "a number of more than 4300 digits"
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} characters)"


def _assign(recipe: Recipe, path: str, value: Any) -> None:
    """Set one field after checking the value's type (and choices, for Literal fields)."""
    kind = _field_type(recipe, path)
    section_name, _, key = path.partition(".")
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise RecipeError(
                f"{path}={shown(value)}: expected one of {', '.join(map(repr, choices))}"
            )
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if abs(value) < 2**1024 else math.inf  # checked as not finite
    elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RecipeError(f"{path}={shown(value)}: expected {kind.__name__}")
    setattr(getattr(recipe, section_name), key, value)
