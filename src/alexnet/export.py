"""Weights in and out: safetensors (with the preprocessing), ONNX, torchvision's weights.

safetensors: every tensor of the checkpoint's model under `model.` (its state_dict names) and
the data statistics under `data_stats.` (the §2 mean image (3, S, S) on the 0-255 scale, the
per-channel std, the RGB PCA of §4.1); the metadata, JSON strings, says what another program
needs to rebuild the network and its test-time preprocessing:

- `classes`: the class names, index = output;
- `model`: the variant and options (activation, LRN convention, pooling, dropout, init);
- `preprocessing`: image_size, crop_size, input_scale, where the mean image is, the channel std
  and the steps in words;
- `recipe`: the whole resolved recipe, so that `alexnet.load` gives back the same network.

`read_safetensors` turns such a file back into the checkpoint dict `alexnet.load` takes.

ONNX: the network from images (batch, 3, crop, crop) to logits (batch, classes), the batch
dimension dynamic. The paper's LRN (§3.3) becomes ONNX's own `LRN` operator. ONNX divides α by
the window size n, as cuda-convnet does, so it is given n·α' where α' multiplies the sum of
squares: the paper's formula as printed (α' = 1e-4) becomes alpha = 5e-4, the cuda-convnet
convention (α' = α/n) keeps alpha = 1e-4.

torchvision: `import_torchvision` makes a run folder of a `torchvision.models.alexnet`
state_dict file (the `"owt"` variant, torchvision's 1000 class names). Its preprocessing is
torchvision's own for those weights, expressed in ours with no new step: shorter side to 256,
centre crop 224, ((x / 255) - mean) / std is (x - 255·mean) / (255·std), so the "mean image" is
255·mean in every pixel, the channel std 255·std and the input scale "standardised". Centre
256×256 then centre 224 is the same window as torchvision's centre 224 of the resized image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from alexnet.data import DataStats
from alexnet.errors import UserError
from alexnet.files import write_atomically, write_text_atomically
from alexnet.recipe import Recipe, preset
from alexnet.run import checkpoint
from alexnet.run import folder as run_folder

FORMAT = "alexnet-safetensors/1"  # the metadata's `format`: change it when the layout changes
ONNX_OPSET = 18
# §4.1 PCA of ImageNet's RGB pixels as commonly quoted (docs/paper.md §4.1; RGB in [0, 1],
# used as √λ): only a fine-tuning of an imported network would use them.
IMAGENET_PCA_SCALES = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_VECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)  # column i: eigenvector i


class ExportError(UserError):
    """An export or import that cannot be made as asked (an extra not installed, a run folder
    already used); the message says what to do."""


def write_safetensors(state: dict[str, Any], path: Path | str) -> None:
    """The checkpoint's model and data statistics, with their metadata (above), written
    atomically."""
    tensors = {f"model.{name}": value for name, value in state["model"].items()}
    for name, value in state["data_stats"].items():
        if isinstance(value, torch.Tensor):
            tensors[f"data_stats.{name}"] = value
    tensors = {name: value.detach().cpu().contiguous() for name, value in tensors.items()}
    write_atomically(path, lambda file: file.write(save(tensors, _metadata(state))))


def _metadata(state: dict[str, Any]) -> dict[str, str]:
    """The safetensors metadata (the module's docstring); ONNX keeps part of it."""
    recipe = checkpoint.recipe_of(state)
    stats = DataStats.from_state_dict(state["data_stats"])
    scale = "divided by channel_std" if recipe.data.input_scale == "standardised" else "raw"
    preprocessing = {
        "image_size": recipe.data.image_size,
        "crop_size": recipe.data.crop_size,
        "input_scale": recipe.data.input_scale,
        "mean_image": "data_stats.mean_image (3, image_size, image_size), RGB, 0-255: a tensor "
        "of the safetensors export",
        "channel_std": stats.channel_std.tolist(),
        "steps": (
            "RGB 0-255; shorter side to image_size (bilinear, antialiased); centre "
            "image_size square; minus mean_image; centre crop_size crop; "
            f"{scale}; NCHW float32"
        ),
    }
    return {
        "format": FORMAT,
        "classes": json.dumps(list(state["classes"])),
        "model": json.dumps(state["recipe"]["model"]),
        "preprocessing": json.dumps(preprocessing),
        "recipe": json.dumps(state["recipe"]),
        "epoch": str(state["epoch"]),
    }


def read_safetensors(path: Path | str) -> dict[str, Any]:
    """A file `write_safetensors` wrote, as the checkpoint dict `alexnet.load` takes."""
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError) as error:
        raise checkpoint.CheckpointError(
            f"{path} is not a readable safetensors file: {error}"
        ) from None
    if metadata.get("format") != FORMAT:
        raise checkpoint.CheckpointError(
            f"{path} was not written by `alexnet export` (its metadata has no format {FORMAT!r})"
        )
    try:
        recipe = json.loads(metadata["recipe"])
        state = {
            "model": _with_prefix(tensors, "model."),
            "recipe": recipe,
            "classes": json.loads(metadata["classes"]),
            "epoch": int(metadata["epoch"]),
            "data_stats": {
                **_with_prefix(tensors, "data_stats."),
                "image_size": recipe["data"]["image_size"],
            },
        }
    except (KeyError, TypeError, ValueError) as error:
        raise checkpoint.CheckpointError(f"{path} has incomplete metadata: {error!r}") from None
    return checkpoint.checked(state, path)


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose names start with `prefix`, by the rest of their names."""
    return {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}


def write_onnx(state: dict[str, Any], path: Path | str) -> None:
    """The checkpoint's network as ONNX: images (batch, 3, crop, crop) -> logits (batch, C),
    LRN as ONNX `LRN` nodes, the class names in the model's metadata; written atomically."""
    try:
        from onnxscript import opset18  # the exporter's translation library; needs onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx extra: pip install 'alexnet[onnx]'") from None

    def lrn_as_onnx(x, size: int, alpha: float, beta: float, k: float, native: bool = False):
        """alexnet::lrn -> ONNX LRN, which divides its alpha by size (the module's docstring);
        the op's second output (the denominators' base, for the backward) is not used."""
        y = opset18.LRN(x, alpha=alpha * size, beta=beta, bias=k, size=size)
        return y, y

    model = checkpoint.build_model(state).eval()
    crop = checkpoint.recipe_of(state).data.crop_size
    program = torch.onnx.export(
        model,
        (torch.zeros(2, 3, crop, crop),),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        custom_translation_table={torch.ops.alexnet.lrn.default: lrn_as_onnx},
        opset_version=ONNX_OPSET,
        verbose=False,
    )
    proto = program.model_proto
    for key, value in _metadata(state).items():
        if key in ("classes", "model", "preprocessing"):
            proto.metadata_props.add(key=key, value=value)
    write_atomically(path, lambda file: file.write(proto.SerializeToString()))


def import_torchvision(weights: Path | str, run_dir: Path | str) -> dict[str, Any]:
    """A run folder (recipe.json, best.pt, last.pt) of a torchvision `alexnet` state_dict file,
    with torchvision's class names and preprocessing (the module's docstring); returns the
    checkpoint dict. Nothing is downloaded."""
    from torchvision.models import AlexNet_Weights

    weights, run_dir = Path(weights), Path(run_dir)
    if (run_dir / "last.pt").exists() or (run_dir / "best.pt").exists():
        raise ExportError(f"{run_dir} already holds a run; choose another --out")
    run_folder.claim(run_dir, resuming=False)  # a new, empty or run folder only
    torchvision = AlexNet_Weights.IMAGENET1K_V1
    transforms = torchvision.transforms()  # ImageClassification: resize, crop, mean, std
    state = {
        "model": _read_state_dict(weights),
        "recipe": _torchvision_recipe(transforms).to_dict(),
        "classes": list(torchvision.meta["categories"]),
        "epoch": 0,
        "data_stats": _torchvision_stats(transforms).state_dict(),
        "imported_from": str(weights.resolve()),
        "path": str(weights),
    }
    checkpoint.build_model(state)  # fits the owt net, or CheckpointError naming the file
    del state["path"]
    with run_folder.lock(run_dir):
        checkpoint.save_atomically(state, run_dir / "best.pt")
        checkpoint.link_atomically(run_dir / "best.pt", run_dir / "last.pt")
        write_text_atomically(run_dir / "recipe.json", json.dumps(state["recipe"], indent=2) + "\n")
    return state


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise checkpoint.CheckpointError(f"no weights file at {path}")
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many kinds for a file that is not its own
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise checkpoint.CheckpointError(f"{path} is not a readable state_dict: {reason}") from None
    if not isinstance(weights, dict) or not all(
        isinstance(value, torch.Tensor) for value in weights.values()
    ):
        raise checkpoint.CheckpointError(f"{path} is not a state_dict (names -> tensors)")
    return weights


def _torchvision_recipe(transforms) -> Recipe:
    """The paper's recipe with torchvision's net and sizes (`transforms`: ImageClassification)."""
    recipe = preset("paper")
    recipe.name = "torchvision"
    recipe.model.variant, recipe.model.lrn, recipe.model.init = "owt", "off", "kaiming"
    recipe.data.image_size = transforms.resize_size[0]  # 256: the shorter side
    recipe.data.crop_size = transforms.crop_size[0]  # 224
    recipe.data.input_scale = "standardised"
    return recipe.validate()


def _torchvision_stats(transforms) -> DataStats:
    """torchvision's mean and std as a constant mean image and channel std, 0-255 scale."""
    size = transforms.resize_size[0]
    mean = 255 * torch.tensor(transforms.mean)  # (3,) on the 0-255 scale
    return DataStats(
        image_size=size,
        mean_image=mean.view(3, 1, 1).expand(3, size, size).contiguous(),
        channel_std=255 * torch.tensor(transforms.std),
        eigenvalues=(255 * torch.tensor(IMAGENET_PCA_SCALES)).square(),
        eigenvectors=torch.tensor(IMAGENET_PCA_VECTORS),
    )
