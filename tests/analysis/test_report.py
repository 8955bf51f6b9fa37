"""report.html: written by `alexnet train` once training returns, self-contained, never failing
a finished run."""

import base64
import json
import logging
import os
import subprocess
import sys
from html.parser import HTMLParser

import pytest

import alexnet.analysis.report
from alexnet.cli import main
from alexnet.train import fit
from tests.test_train import tiny_recipe


class _Page(HTMLParser):
    """The tags and attributes of a page."""

    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def train_command(source, run):
    """`alexnet train` with the settings of tiny_recipe(source, epochs=1)."""
    return [
        "train", "--data", str(source), "--out", str(run), "--epochs", "1", "--batch-size", "8",
        "--workers", "0", "--set", "data.val_fraction=0.25", "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory, colour_tree):
    run = tmp_path_factory.mktemp("report") / "run"
    assert main(train_command(colour_tree, run)) == 0
    return run


def test_fit_only_trains(tmp_path, colour_tree):
    fit(tiny_recipe(colour_tree, epochs=1), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "best.pt").exists()
    assert not (tmp_path / "run" / "report.html").exists()


def test_the_report_embeds_every_figure_and_needs_no_network(reported_run):
    page = _Page()
    html = (reported_run / "report.html").read_text()
    page.feed(html)
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert {attrs["alt"] for attrs in images} >= {
        "Loss and error against epoch (curves.png)", "conv1.png", "top5.png", "neighbours.png"
    }  # fmt: skip
    for attrs in images:
        prefix = "data:image/png;base64,"
        assert attrs["src"].startswith(prefix)
        assert base64.b64decode(attrs["src"][len(prefix) :])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [tag for tag, _ in page.tags if tag in ("script", "link", "iframe")]
    for _, attrs in page.tags:
        assert not any("://" in str(value) for value in attrs.values())
    for text in ("ten crops", "centre crop", "recall@10", "training images", "images/s"):
        assert text in html
    codes = json.loads((reported_run / "codes.json").read_text())
    assert set(codes["codes"]) == {"autoencoder", "pca", "random"}


def test_report_command_rewrites_it_for_chosen_images(reported_run, capsys):
    before = (reported_run / "report.html").stat().st_mtime_ns
    argv = ["report", str(reported_run), "--index", "0", "--index", "2", "--no-ten-crop"]
    assert main([*argv, "--no-progress"]) == 0
    assert "written" in capsys.readouterr().out
    assert (reported_run / "report.html").stat().st_mtime_ns != before
    assert "Validation images 0, 2" in (reported_run / "report.html").read_text()


def test_a_second_report_of_the_checkpoint_reads_every_result_from_the_cache(
    reported_run, monkeypatch
):
    alexnet.analysis.report.write_run_report(reported_run)  # as `alexnet train` wrote it
    before = {
        name: (reported_run / name).read_bytes()
        for name in ("top5.png", "neighbours.png", "codes.json")
    }
    evaluation = _section(reported_run, "Evaluation")

    def never(*args, **kwargs):
        raise AssertionError("the network was built, or the checkpoint evaluated, again")

    monkeypatch.setattr(alexnet.analysis.report, "TrainedNetwork", never)
    monkeypatch.setattr(alexnet.analysis.report, "evaluate_checkpoint", never)
    alexnet.analysis.report.write_run_report(reported_run)
    for name, content in before.items():
        assert (reported_run / name).read_bytes() == content, name
    assert _section(reported_run, "Evaluation") == evaluation
    assert list((reported_run / "cache").glob("*.tmp")) == []


def test_a_newer_checkpoint_is_not_read_from_the_cache(reported_run, monkeypatch):
    best = reported_run / "best.pt"
    stat = best.stat()
    os.utime(best, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as a later epoch's save
    built = []
    original = alexnet.analysis.report.TrainedNetwork

    def counted(*args, **kwargs):
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(alexnet.analysis.report, "TrainedNetwork", counted)
    alexnet.analysis.report.write_run_report(reported_run)
    assert built == [1]


def _section(run, title: str) -> str:
    """The HTML of the report's section whose heading starts with `title`."""
    html = (run / "report.html").read_text()
    start = html.index(f"<h2>{title}")
    return html[start : html.index("<h2>", start + 1)]


def test_report_command_refuses_an_index_outside_the_set(reported_run, capsys):
    assert main(["report", str(reported_run), "--index", "99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["alexnet: error: image index 99 outside the 9 validation images"]


def test_a_failing_report_only_warns(tmp_path, colour_tree, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no room")

    monkeypatch.setattr(alexnet.analysis.report, "write_run_report", broken)
    with caplog.at_level(logging.WARNING, logger="alexnet"):
        assert main(train_command(colour_tree, tmp_path / "run")) == 0
    assert (tmp_path / "run" / "last.pt").exists()
    assert "report.html not written (RuntimeError: no room)" in caplog.text


def test_run_report_false_leaves_it_out(tmp_path, colour_tree, monkeypatch):
    def refused(*args, **kwargs):
        raise AssertionError("report written although run.report=false")

    monkeypatch.setattr(alexnet.analysis.report, "write_run_report", refused)
    recipe = tiny_recipe(colour_tree, epochs=1)
    recipe.run.report = False
    alexnet.analysis.report.write_report_after_training(tmp_path, recipe)  # returns before any work


def test_written_page_escapes_text(tmp_path):
    section = alexnet.analysis.report.Section("<b>", ["a < b & c"])
    alexnet.analysis.report.write_report(tmp_path / "r.html", "t", "s", [section])
    assert "a &lt; b &amp; c" in (tmp_path / "r.html").read_text()


def test_a_run_killed_mid_write_still_gets_its_report(reported_run, capsys, caplog):
    """metrics.jsonl ending in half a line (a kill while it was appended): the report drops it
    with a warning, as --resume does."""
    metrics = reported_run / "metrics.jsonl"
    whole = metrics.read_text()
    metrics.write_text(whole + '{"epoch": 2, "lr": 0.0')
    try:
        with caplog.at_level(logging.WARNING, logger="alexnet"):
            argv = ["report", str(reported_run), "--no-ten-crop", "--bits", "8", "--samples", "2"]
            assert main([*argv, "--no-progress"]) == 0
    finally:
        metrics.write_text(whole)
    assert "line 2 is cut short" in caplog.text
    assert "written" in capsys.readouterr().out


def test_a_second_report_of_an_unchanged_run_copies_its_page_without_torch(reported_run, tmp_path):
    """`alexnet report` keeps the page; asked again with nothing changed, it imports no torch,
    data source or matplotlib and writes the same page."""
    assert main(["report", str(reported_run), "--no-progress"]) == 0
    page = (reported_run / "report.html").read_text()
    (reported_run / "report.html").unlink()
    code = (
        "import sys\nfrom alexnet.cli import main\n"
        f"assert main(['report', {str(reported_run)!r}]) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'matplotlib', 'sklearn', 'PIL', 'jinja2')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "copied" in done.stdout
    assert (reported_run / "report.html").read_text() == page
