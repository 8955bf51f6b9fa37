"""The package's layers: a module imports only from its own layer or the ones below it (lower
never imports higher), and training reaches nothing of the analysis stack."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "alexnet"
LAYERS = [  # lowest first; a top-level module or sub-package each
    "errors", "files", "native", "host_memory", "recipe", "ops", "model", "optim", "data",
    "placement", "run", "evaluate", "train", "export", "inference", "analysis", "experiments",
    "cli",
]  # fmt: skip
ENTRY_POINTS = {"__init__", "__main__"}  # the public API and `python -m alexnet`: above all


def layer_of(module: str) -> str:
    """ "alexnet.run.state" -> "run"; "alexnet" -> "__init__"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> set[str]:
    """The alexnet modules a file imports (`from alexnet.x import y` counts y if it is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alexnet"):
            found.add(node.module)
            found.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/")).is_dir()
                or (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/"))
                .with_suffix(".py")
                .is_file()
            )
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("alexnet"))
    return found


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts), path


def test_every_layer_is_a_module_or_sub_package_of_the_package():
    names = {path.stem for path in PACKAGE.glob("*.py")} | {
        path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()
    }
    assert names == set(LAYERS) | ENTRY_POINTS


@pytest.mark.parametrize("module, path", list(modules()), ids=lambda value: str(value))
def test_a_module_imports_only_from_its_layer_or_below(module, path):
    here = layer_of(module)
    if here in ENTRY_POINTS:
        return
    above = [
        imported
        for imported in imports_of(path)
        if layer_of(imported) not in ENTRY_POINTS
        and LAYERS.index(layer_of(imported)) > LAYERS.index(here)
    ]
    assert not above, f"{module} ({here}) imports from higher layers: {above}"


def test_the_layer_check_sees_a_violation(tmp_path):
    """The AST reading behind the check finds an upward import (a test that can fail)."""
    path = tmp_path / "bad.py"
    path.write_text("from alexnet.analysis.report import write_run_report\n")
    assert {layer_of(m) for m in imports_of(path)} == {"analysis"}


def test_training_loads_nothing_of_the_analysis_stack():
    code = "import sys, alexnet.train\nprint('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "alexnet.train" in loaded
    unwanted = ("alexnet.analysis", "alexnet.experiments", "alexnet.cli", "jinja2", "faiss")
    assert [name for name in loaded if name.startswith(unwanted)] == []


def test_the_command_line_starts_without_torch():
    """Importing torch takes 2-3 s on a 2-core CPU, torchvision (torch._dynamo) 1.5-3 s more,
    matplotlib and scikit-learn a second each: `alexnet --help`, a usage error and the report of
    an unchanged run need none of them; each command imports what it calls when it runs."""
    code = "import sys, alexnet.cli\nprint('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "alexnet.cli.commands" in loaded
    heavy = ("torch", "torchvision", "matplotlib", "sklearn", "numpy", "PIL")
    assert [name for name in loaded if name.split(".")[0] in heavy] == []


# The environment names a place or a launcher's facts, never a behaviour (recipe fields do that):
DOCUMENTED_ENVIRONMENT = {
    "alexnet.files": {"ALEXNET_CACHE"},  # the cache folder
    "alexnet.native": {"CC"},  # which C compiler builds the kernels
    "alexnet.placement.ranks": {"RANK", "WORLD_SIZE", "LOCAL_RANK"},  # set by torchrun
    "alexnet.data.loading.process_loader": {"LOCAL_WORLD_SIZE"},  # torchrun: cores per process
}


def environment_reads(path: Path) -> set[str]:
    """The names a file reads from the environment (os.environ[...], .get(...), os.getenv(...));
    "?" where the name is not a literal, and "*" where os.environ is used some other way."""
    tree, names = ast.parse(path.read_text()), set()
    read_nodes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ"):
            environ, key = node.value, node.slice
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in (
            "os.environ.get", "environ.get", "os.getenv", "getenv",
        ):  # fmt: skip
            environ = getattr(node.func, "value", node.func)  # os.environ, os, or getenv itself
            key = node.args[0] if node.args else None
        else:
            continue
        read_nodes.add(id(environ))
        names.add(key.value if isinstance(key, ast.Constant) else "?")
    for node in ast.walk(tree):
        if ast.unparse(node) == "os.environ" and id(node) not in read_nodes:
            names.add("*")
    return names


@pytest.mark.parametrize("module, path", list(modules()), ids=lambda value: str(value))
def test_no_module_reads_the_environment_except_for_documented_locations(module, path):
    """Fast paths are recipe fields resolved once (placement/), not environment switches such
    as the former ALEXNET_NATIVE_LRN and ALEXNET_NATIVE_CROPS."""
    unexpected = environment_reads(path) - DOCUMENTED_ENVIRONMENT.get(module, set())
    assert not unexpected, f"{module} reads {sorted(unexpected)} from the environment"


def test_the_environment_check_sees_a_switch(tmp_path):
    path = tmp_path / "switch.py"
    path.write_text(
        "import os\nENABLED = os.environ.get('ALEXNET_NATIVE_LRN', '1') != '0'\n"
        "LOCAL = os.getenv('X')\nALL = dict(os.environ)\n"
    )
    assert environment_reads(path) == {"ALEXNET_NATIVE_LRN", "X", "*"}
