"""Shared fixtures: tiny data sets in real on-disk layouts, made with Pillow."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLOURS = {"red": (200, 30, 30), "green": (30, 190, 40), "blue": (40, 50, 210)}


def write_image(path: Path, colour, size=(20, 16), seed=0, format=None) -> None:
    """A noisy image of one dominant colour, so a class is learnable in a few steps."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, format=format)


@pytest.fixture(scope="session")
def colour_tree(tmp_path_factory) -> Path:
    """root/<colour>/<n>.png: three classes of 12 images, one image-folder tree."""
    root = tmp_path_factory.mktemp("colours")
    for index, (name, colour) in enumerate(COLOURS.items()):
        for n in range(12):
            write_image(root / name / f"{n}.png", colour, seed=100 * index + n)
    return root


@pytest.fixture(scope="session")
def ilsvrc_tree(tmp_path_factory) -> Path:
    """ILSVRC-2012 layout: train/<wnid>/*.JPEG and a flat val/ labelled by LOC_val_solution.csv."""
    root = tmp_path_factory.mktemp("ilsvrc")
    wnids = {"n01440764": COLOURS["red"], "n01443537": COLOURS["blue"]}
    rows = ["ImageId,PredictionString"]
    for index, (wnid, colour) in enumerate(wnids.items()):
        for n in range(3):
            path = root / "train" / wnid / f"{wnid}_{n}.JPEG"
            write_image(path, colour, size=(300, 260), seed=10 * index + n, format="JPEG")
        image_id = f"ILSVRC2012_val_0000000{index + 1}"
        write_image(
            root / "val" / f"{image_id}.JPEG",
            colour,
            size=(280, 300),
            seed=99 + index,
            format="JPEG",
        )
        rows.append(f"{image_id},{wnid} 1 2 3 4")
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="session", autouse=True)
def _statistics_cache(tmp_path_factory):
    """Data statistics and compiled kernels are cached in one folder ($ALEXNET_CACHE): a fresh
    one for the suite, never the user's ~/.cache/alexnet; commands the tests start inherit it.
    The kernels are built into it first, as `alexnet kernels` would, so that no command's
    output depends on whether it was the one that built them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALEXNET_CACHE", str(tmp_path_factory.mktemp("alexnet-cache")))
        from alexnet.placement.kernels import build_kernels

        build_kernels(required=False)
        yield
