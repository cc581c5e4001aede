"""The import contracts in pyproject.toml hold for the tree, and each one fails on a deliberate violation."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (scripts/setup.sh)")


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          env={"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=120)


def test_the_tree_keeps_every_contract():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "0 broken" in out.stdout


def test_the_console_contract_covers_every_module_below_stages():
    contracts = {c["name"]: c for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"]}
    layers = contracts["Layers"]["layers"]
    below = {f"sftpipe.{name.strip()}" for layer in layers[layers.index("stages") + 1:]
             for name in re.split("[|:]", layer)}
    assert len(below) > 20 and set(contracts["Console only in stages and CLI"]["source_modules"]) == below


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    shutil.copytree(ROOT / "src" / "sftpipe", root / "src" / "sftpipe",
                    ignore=shutil.ignore_patterns("__pycache__", "data", "assets"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize("module, line, contract", [
    ("render.py", "from .stages import show", "Layers"),
    ("evaluate/score.py", "from ..demo import policy", "Layers"),
    ("runs/info.py", "from ..train import lifecycle", "Layers"),
    ("dataset.py", "import rich.progress", "Console only in stages and CLI"),
    ("doctor/base.py", "from rich.table import Table", "Console only in stages and CLI"),
    ("curate/filters.py", "from ..evaluate import score", "Data flow curate-train-eval"),
    ("train/data.py", "from ..curate import base", "Layers"),  # stage libraries are independent
    ("review/stats.py", "from ..evaluate import score", "Layers"),
    ("config/project.py", "from ..evaluate import score", "Layers"),  # config is on the ground floor
    ("generate/engine.py", "from ..serve import app", "Eval results"),
])
def test_each_contract_fails_on_a_wrong_way_import(copy, module, line, contract):
    path = copy / "src" / "sftpipe" / module
    original = path.read_text(encoding="utf-8")
    path.write_text(f"{original}\n{line}  # deliberate violation\n", encoding="utf-8")
    try:
        out = lint(copy)
    finally:
        path.write_text(original, encoding="utf-8")
    assert out.returncode != 0
    broken = [ln for ln in out.stdout.splitlines() if " BROKEN" in ln]
    assert any(ln.split(" BROKEN")[0] == contract for ln in broken), out.stdout[-3000:]


def test_a_module_no_layer_names_breaks_the_layers_contract(copy):
    extra = copy / "src" / "sftpipe" / "unplaced.py"
    extra.write_text('"""A new module nobody placed."""\n', encoding="utf-8")
    try:
        out = lint(copy)
    finally:
        extra.unlink()
    assert out.returncode != 0 and "sftpipe.unplaced" in out.stdout, out.stdout[-3000:]


def loops(graph) -> list[str]:
    """Every import that lies on a loop: between modules, and between the children of each package (a package's
    subpackages squashed, so `a.x -> b.y` and `b.z -> a.w` make `a` and `b` a loop). Empty when there is none."""
    levels: dict[str, set[tuple[str, str]]] = {"": set()}
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            levels[""].add((importer, imported))
            a, b = importer.split("."), imported.split(".")
            for depth in range(1, min(len(a), len(b))):  # each package that holds both, below its common root
                if a[:depth] != b[:depth]:
                    break
                if a[depth] != b[depth]:
                    levels.setdefault(".".join(a[:depth]), set()).add((".".join(a[:depth + 1]),
                                                                       ".".join(b[:depth + 1])))
    found = set()
    for edges in levels.values():
        out: dict[str, set[str]] = {}
        for a, b in edges:
            out.setdefault(a, set()).add(b)
        for a, b in edges:  # on a loop when `a` can be reached from `b`
            seen, todo = set(), [b]
            while todo:
                node = todo.pop()
                if node not in seen:
                    seen.add(node)
                    todo.extend(out.get(node, ()))
            if a in seen:
                found.add(f"{a} -> {b}")
    return sorted(found)


def test_no_import_loops_between_modules_or_packages():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("sftpipe", cache_dir=None)
    assert len(graph.modules) > 100 and loops(graph) == []


def test_the_loop_check_finds_module_and_package_loops():
    grimp = pytest.importorskip("grimp")
    graph = grimp.ImportGraph()
    for a, b in [("p.a.x", "p.b.y"), ("p.b.z", "p.a.w"), ("p.c.one", "p.c.two"), ("p.c.two", "p.c.one"),
                 ("p.c.one", "p.d")]:
        graph.add_import(importer=a, imported=b)
    assert loops(graph) == ["p.a -> p.b", "p.b -> p.a", "p.c.one -> p.c.two", "p.c.two -> p.c.one"]
