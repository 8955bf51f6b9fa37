"""Weights in and out: safetensors and ONNX exports against torch, torchvision's weights against
torchvision's own model and transforms."""

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torchvision
from PIL import Image
from safetensors import safe_open

from alexnet import AlexNet, load
from alexnet.cli import main
from alexnet.data import DataStats
from alexnet.evaluate import evaluate_checkpoint
from alexnet.export import import_torchvision, read_safetensors, write_onnx, write_safetensors
from alexnet.recipe import apply_overrides, preset
from alexnet.run import checkpoint

SIZE = 67  # a small input the net accepts (>= 63 px), to keep the exports fast


def saved_state(variant="paper", lrn="paper", classes=10, recipe="paper", image_size=72):
    """A checkpoint dict of a randomly initialised network with made-up data statistics."""
    torch.manual_seed(0)
    sizes = [f"data.image_size={image_size}", f"data.crop_size={min(SIZE, image_size)}"]
    recipe = apply_overrides(preset(recipe), [f"model.variant={variant}", f"model.lrn={lrn}"])
    recipe = apply_overrides(recipe, sizes)
    model = AlexNet(classes, **vars(recipe.model))
    stats = DataStats(
        image_size, 255 * torch.rand(3, image_size, image_size), 40 + 20 * torch.rand(3),
        torch.tensor([900.0, 50.0, 8.0]), torch.linalg.qr(torch.randn(3, 3)).Q,
    )  # fmt: skip
    return {
        "model": model.state_dict(),
        "recipe": recipe.to_dict(),
        "classes": [f"class {i}" for i in range(classes)],
        "epoch": 7,
        "data_stats": stats.state_dict(),
        "path": "made up",
    }


def noisy_photos(folder, sizes=((300, 260), (257, 400), (411, 299))):
    """Non-square RGB images with smooth gradients and noise, so that resizing matters."""
    paths = []
    for index, (width, height) in enumerate(sizes):
        rng = np.random.default_rng(index)
        ramp = np.linspace(0, 200, width)[None, :, None] + np.linspace(0, 55, height)[:, None, None]
        pixels = np.clip(ramp + rng.normal(0, 30, (height, width, 3)), 0, 255).astype(np.uint8)
        paths.append(folder / f"photo-{index}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


@pytest.mark.parametrize(
    "variant, lrn",
    [
        ("paper", "paper"),
        ("paper", "cuda-convnet"),
        ("one-tower", "paper"),
        ("one-tower", "cuda-convnet"),
        ("owt", "off"),
    ],
)
def test_onnx_runs_like_torch_with_real_lrn_nodes(variant, lrn, tmp_path):
    state = saved_state(variant, lrn)
    write_onnx(state, tmp_path / "net.onnx")
    graph = onnx.load(tmp_path / "net.onnx").graph
    kinds = [node.op_type for node in graph.node]
    lrn_nodes = [node for node in graph.node if node.op_type == "LRN"]
    assert len(lrn_nodes) == (0 if lrn == "off" else 2)
    assert not {"Pad", "AveragePool", "Pow"} & set(kinds)  # no decomposed LRN
    for node in lrn_nodes:  # ONNX divides alpha by size: the paper's 1e-4 is 5e-4 there
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attributes["size"] == 5 and attributes["bias"] == 2 and attributes["beta"] == 0.75
        assert attributes["alpha"] == pytest.approx(5e-4 if lrn == "paper" else 1e-4)
    model = checkpoint.build_model(state).eval()
    session = onnxruntime.InferenceSession(
        tmp_path / "net.onnx", providers=["CPUExecutionProvider"]
    )
    for batch in (1, 3):  # the batch dimension is dynamic
        images = 60 * torch.randn(batch, 3, SIZE, SIZE)  # the scale of centred 0-255 pixels
        (logits,) = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            expected = model(images)
        assert np.abs(logits - expected.numpy()).max() < 1e-4
    metadata = {prop.key: prop.value for prop in onnx.load(tmp_path / "net.onnx").metadata_props}
    assert json.loads(metadata["classes"]) == state["classes"]


def test_safetensors_holds_the_network_and_its_preprocessing(tmp_path):
    state = saved_state("one-tower", "cuda-convnet", classes=3, recipe="digits")
    write_safetensors(state, tmp_path / "net.safetensors")
    with safe_open(tmp_path / "net.safetensors", framework="pt") as file:
        metadata = file.metadata()
        tensors = {name: file.get_tensor(name) for name in file.keys()}
    preprocessing = json.loads(metadata["preprocessing"])
    assert (preprocessing["image_size"], preprocessing["crop_size"]) == (72, SIZE)
    assert preprocessing["input_scale"] == "standardised"
    stats = state["data_stats"]
    assert preprocessing["channel_std"] == stats["channel_std"].tolist()
    assert torch.equal(tensors["data_stats.mean_image"], stats["mean_image"])
    assert json.loads(metadata["model"])["variant"] == "one-tower"
    assert json.loads(metadata["model"])["lrn"] == "cuda-convnet"
    assert json.loads(metadata["classes"]) == state["classes"]
    model = AlexNet(3, "one-tower", lrn="cuda-convnet")  # another program: strip "model."
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    back = read_safetensors(tmp_path / "net.safetensors")
    assert back["recipe"] == state["recipe"] and back["classes"] == state["classes"]
    assert back["epoch"] == 7 and back["data_stats"]["image_size"] == 72


def test_load_and_predict_read_a_safetensors_export_as_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    state = saved_state(classes=3, recipe="digits")
    checkpoint.save_atomically({k: v for k, v in state.items() if k != "path"}, run / "best.pt")
    assert main(["export", str(run), "--format", "safetensors", "--out", "net.safetensors"]) == 0
    assert "written: net.safetensors" in capsys.readouterr().out
    photos = noisy_photos(tmp_path)
    torch.testing.assert_close(
        load("net.safetensors").probabilities(photos), load(run).probabilities(photos)
    )
    assert main(["predict", "net.safetensors", *map(str, photos), "--json", "p.json"]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())["predictions"]
    assert [row["classes"][0] for row in rows] == [p.classes[0] for p in load(run).predict(photos)]


@pytest.fixture(autouse=True)
def _in_a_scratch_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_export_refuses_what_it_cannot_read(tmp_path, capsys):
    (tmp_path / "junk.safetensors").write_bytes(b"not a header")
    for target, message in [
        ("missing", "no checkpoint at missing"),
        ("junk.safetensors", "is not a readable safetensors file"),
    ]:
        assert main(["export", target, "--format", "onnx"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


@pytest.fixture(scope="module")
def torchvision_weights(tmp_path_factory):
    """A randomly initialised torchvision alexnet, saved as a state_dict file, and the model.

    fc8 is scaled up so that the random network's softmax is far from uniform and its top-5
    are well apart: an agreement test on near-equal probabilities would prove little."""
    torch.manual_seed(1)
    model = torchvision.models.alexnet().eval()
    with torch.no_grad():
        model.classifier[6].weight.mul_(300)
    path = tmp_path_factory.mktemp("torchvision") / "alexnet.pth"
    torch.save(model.state_dict(), path)
    return path, model


def torchvision_probabilities(model, paths):
    """What torchvision's own weights' transforms and model give for the images."""
    transforms = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.transforms()
    images = torch.stack([transforms(Image.open(path).convert("RGB")) for path in paths])
    with torch.no_grad():
        return model(images).softmax(dim=1)  # (N, 1000)


def test_imported_torchvision_weights_predict_as_torchvision_does(torchvision_weights, capsys):
    """Same top-5, probabilities within 1e-4. Not identical: torchvision's transforms resize a
    PIL image with Pillow, ours resize with torch's uint8 kernel (data/sources/downsample.py),
    and the two differ by at most one grey level in a pixel."""
    path, model = torchvision_weights
    assert main(["import-torchvision", str(path), "--out", "tv"]) == 0
    assert "alexnet eval tv" in capsys.readouterr().out
    photos = noisy_photos(path.parent)
    assert main(["predict", "tv", *map(str, photos), "--json", "p.json"]) == 0
    rows = json.loads(open("p.json").read())["predictions"]
    expected = torchvision_probabilities(model, photos).topk(5)  # (N, 5)
    categories = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    for row, indices, probabilities in zip(rows, expected.indices, expected.values, strict=True):
        assert row["classes"] == [categories[i] for i in indices]
        assert row["probabilities"] == pytest.approx(probabilities.tolist(), abs=1e-4)
    net = load("tv")
    assert net.classes == categories and net.model.variant == "owt"
    transforms = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.transforms()
    for photo in photos:  # the same window and normalisation, up to one grey level
        image = Image.open(photo).convert("RGB")
        difference = (net.transform(image) - transforms(image)).abs().max()
        assert difference <= 1 / 255 / min(transforms.std) + 1e-6


def test_imported_run_evaluates_as_torchvision_scores(torchvision_weights, tmp_path):
    """ILSVRC-2012's layout with 1000 wnid folders, three validation images labelled with
    torchvision's first, second and sixth most probable class: top-1 error 2/3, top-5 1/3."""
    path, model = torchvision_weights
    import_torchvision(path, tmp_path / "tv")
    photos = noisy_photos(tmp_path)
    wnids = [f"n{index:08d}" for index in range(1000)]
    for wnid in wnids:  # every class needs a training image
        (tmp_path / "data" / "train" / wnid).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "data" / "train" / wnid / "0.png")
    probabilities = torchvision_probabilities(model, photos)
    labels = [
        int(row.argsort(descending=True)[rank])
        for row, rank in zip(probabilities, (0, 1, 5), strict=True)
    ]
    lines = ["ImageId,PredictionString"]
    (tmp_path / "data" / "val").mkdir()
    for index, (photo, label) in enumerate(zip(photos, labels, strict=True)):
        image_id = f"ILSVRC2012_val_{index + 1:08d}"
        photo.rename(tmp_path / "data" / "val" / f"{image_id}.png")
        lines.append(f"{image_id},{wnids[label]} 1 2 3 4")
    (tmp_path / "data" / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    state = checkpoint.load(tmp_path / "tv", prefer="best.pt")
    _, results = evaluate_checkpoint(state, data=str(tmp_path / "data"), workers=0)
    centre = results["centre crop"]
    assert (centre["top1_error"], centre["top5_error"]) == (2 / 3, 1 / 3)
    loss = -probabilities[torch.arange(3), labels].log().mean()
    assert centre["loss"] == pytest.approx(float(loss), rel=1e-4)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda path: None, "no weights file at"),
        (lambda path: path.write_bytes(b"junk"), "is not a readable state_dict"),
        (lambda path: torch.save(AlexNet(1000).state_dict(), path), "does not fit this network"),
    ],
    ids=["missing", "junk", "the paper's net"],
)
def test_import_refuses_other_files(make, message, tmp_path, capsys):
    make(tmp_path / "weights.pth")
    assert main(["import-torchvision", str(tmp_path / "weights.pth"), "--out", "tv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "tv").exists()


def test_import_keeps_an_existing_run(torchvision_weights, tmp_path, capsys):
    path, _ = torchvision_weights
    import_torchvision(path, tmp_path / "tv")
    before = (tmp_path / "tv" / "best.pt").stat().st_mtime_ns
    assert main(["import-torchvision", str(path), "--out", str(tmp_path / "tv")]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "tv" / "best.pt").stat().st_mtime_ns == before


def test_an_imported_network_cannot_be_resumed_as_a_run(torchvision_weights, tmp_path, capsys):
    path, _ = torchvision_weights
    import_torchvision(path, tmp_path / "tv")
    assert main(["train", "--resume", str(tmp_path / "tv"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a network but not its training state (optimizer" in err[0]
