"""`alexnet.load`: a trained run classifies and embeds images as `alexnet eval` sees them."""

import csv
import json

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from alexnet import load
from alexnet.data import DataError, open_splits
from alexnet.data.sources.decode import read_rgb
from alexnet.evaluate import evaluate_checkpoint
from alexnet.inference import Prediction, write_predictions_csv, write_predictions_json
from alexnet.run import checkpoint
from alexnet.train import fit
from tests.conftest import COLOURS, write_image
from tests.test_train import tiny_recipe


@pytest.fixture(scope="module")
def run(tmp_path_factory, colour_tree):
    run = tmp_path_factory.mktemp("inference") / "run"
    fit(tiny_recipe(colour_tree, epochs=1), run, progress=False)  # one epoch: errors to count
    return run


@pytest.fixture(scope="module")
def held_out(run):
    """The validation images of the run, as paths, with their class names."""
    val = open_splits(checkpoint.recipe_of(checkpoint.load(run / "best.pt")).data).val
    return [val.path(i) for i in range(len(val))], [val.classes[label] for label in val.labels]


def test_predict_reproduces_the_top1_error_of_eval(run, held_out):
    paths, truth = held_out
    _, results = evaluate_checkpoint(checkpoint.load(run, prefer="best.pt"), ten_crop=True)
    net = load(run, batch_size=4)  # batches of another size than eval's
    labels = torch.tensor([net.classes.index(label) for label in truth])
    for view, ten_crop in (("centre crop", False), ("ten crops", True)):
        predictions = net.predict(paths, top=1, ten_crop=ten_crop)
        wrong = sum(p.classes[0] != label for p, label in zip(predictions, truth, strict=True))
        assert wrong / len(paths) == results[view]["top1_error"], view
        probabilities = net.probabilities(paths, ten_crop=ten_crop)  # (N, 3)
        loss = -probabilities[torch.arange(len(paths)), labels].log().mean()
        assert float(loss) == pytest.approx(results[view]["loss"], rel=1e-5), view


def test_embed_is_fc7_of_the_preprocessed_batch(run, held_out):
    paths, _ = held_out
    net = load(run / "last.pt")
    batch = torch.stack([net.transform(read_rgb(path)) for path in paths])  # (N, 3, 64, 64)
    with torch.no_grad():
        expected = net.model.embed(batch)
    vectors = net.embed(paths)
    assert vectors.shape == (len(paths), 4096)
    torch.testing.assert_close(vectors, expected, rtol=1e-5, atol=1e-5)


def test_paths_pil_images_and_tensors_are_the_same_image(run, tmp_path):
    net = load(run)
    path = tmp_path / "green.png"
    write_image(path, COLOURS["green"], size=(50, 40), seed=3)
    image = read_rgb(path)
    rows = net.probabilities([path, str(path), image, F.pil_to_tensor(image)])  # (4, 3)
    torch.testing.assert_close(rows, rows[:1].expand(4, -1))
    assert rows.sum(dim=1).tolist() == pytest.approx([1.0] * 4)
    [single] = net.predict(image.convert("L"), top=2)  # one image, grey: still a list of one
    assert len(single.classes) == 2 and single.probabilities[0] >= single.probabilities[1]
    assert set(net.predict([image], top=10)[0].classes) == set(net.classes)  # capped at 3


def test_what_load_and_predict_refuse(run, tmp_path):
    exported = tmp_path / "model.onnx"
    exported.write_bytes(b"{}")
    with pytest.raises(checkpoint.CheckpointError, match="neither a run folder, a .pt"):
        load(exported)
    with pytest.raises(checkpoint.CheckpointError, match="not a readable safetensors file"):
        load(exported.rename(tmp_path / "model.safetensors"))
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at"):
        load(tmp_path / "missing.safetensors")
    net = load(run)
    with pytest.raises(ValueError, match="top must be >= 1"):
        net.predict([tmp_path], top=0)
    with pytest.raises(DataError, match="cannot read image"):
        net.predict([tmp_path / "missing.png"])
    with pytest.raises(ValueError, match=r"uint8 tensor \(3, H, W\)"):
        net.predict(torch.zeros(3, 70, 70))


def test_predict_files_marks_unreadable_files_in_order(run, tmp_path):
    paths = []
    for n, colour in enumerate(["red", "blue", "green", "red", "blue"]):
        paths.append(str(tmp_path / f"{n}.png"))
        write_image(tmp_path / f"{n}.png", COLOURS[colour], seed=n)
    (tmp_path / "1.png").write_bytes(b"\x89PNG truncated")
    (tmp_path / "4.png").write_bytes(b"")
    net = load(run, batch_size=2)
    results = list(net.predict_files(paths, top=1, workers=0))
    assert [path for path, _ in results] == paths
    assert [prediction is None for _, prediction in results] == [False, True, False, False, True]
    readable = [paths[0], paths[2], paths[3]]
    assert [p for _, p in results if p] == net.predict(readable, top=1)


FORMULA_NAMES = ["=1+1", "+1", "-1", "@SUM(A1)", "\tcmd", "\rcmd"]  # OWASP's six first characters


def test_csv_cells_a_spreadsheet_would_evaluate_get_a_quote_and_json_keeps_them(tmp_path):
    rows = [(f"{name}.png", Prediction([name, "a-b"], [0.75, 0.25])) for name in FORMULA_NAMES]
    rows.append(("cat.png", Prediction(["cat", "'quoted"], [0.5, 0.5])))
    write_predictions_csv(tmp_path / "p.csv", rows)
    with open(tmp_path / "p.csv", newline="") as file:
        cells = list(csv.reader(file))
    assert cells[0] == ["path", "class_1", "probability_1", "class_2", "probability_2"]
    for name, line in zip(FORMULA_NAMES, cells[1:], strict=False):
        assert line == [f"'{name}.png", f"'{name}", "0.750000", "a-b", "0.250000"]
    assert cells[-1] == ["cat.png", "cat", "0.500000", "'quoted", "0.500000"]  # left as it is
    write_predictions_json(tmp_path / "p.json", rows, skipped=["=skipped.png"])
    report = json.loads((tmp_path / "p.json").read_text())
    assert [p["path"] for p in report["predictions"]] == [path for path, _ in rows]
    assert [p["classes"][0] for p in report["predictions"]][:6] == FORMULA_NAMES
    assert report["skipped"] == ["=skipped.png"]
