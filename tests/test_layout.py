"""The package reads as the data flow: no import cycle, nothing imports a layer above its own,
``serve`` never imports ``train``, and only ``tracking`` imports MLflow."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.scripts import ROOT

# Lower layers first; a module may import its own layer and those below it.
LAYERS = [
    ("recmf.errors", "recmf.checks", "recmf.settings"),
    ("recmf.data",),
    ("recmf.store",),
    ("recmf.tracking", "recmf.eval"),
    ("recmf.model",),
    ("recmf.serve",),
    ("recmf.train",),
    ("recmf.config", "recmf.cli", "recmf.ingest", "recmf.pipeline", "recmf.api"),  # the wiring
]
# The only modules that read a Hydra config; everything else takes typed settings
CONFIG_READERS = ("recmf.config", "recmf.cli")
# MLflow runs this file to build the served model: it must subclass MLflow's PythonModel
MLFLOW_ENTRY = "recmf.serve.pyfunc_entry"


def _modules() -> dict[str, Path]:
    out = {}
    for path in (ROOT / "recmf").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _layer(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path) & set(modules) - {name} for name, path in modules.items()}


def test_layout_every_module_has_a_layer_and_imports_none_above_it():
    upward = []
    for module, deps in _graph().items():
        if module == "recmf":
            continue
        upward += [f"{module} -> {d}" for d in deps if d != "recmf" and _layer(d) > _layer(module)]
    assert upward == []


def test_layout_has_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                return [*path, module, dep]
            if dep not in state and (cycle := visit(dep, [*path, module])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            assert visit(module, []) is None


def test_layout_serve_never_imports_train_and_only_tracking_imports_mlflow():
    for module, path in _modules().items():
        imported = _imports(path)
        if module.startswith("recmf.serve"):
            assert not any(i.startswith("recmf.train") for i in imported), module
        uses_mlflow = any(i == "mlflow" or i.startswith("mlflow.") for i in imported)
        if uses_mlflow:
            assert module.startswith("recmf.tracking") or module == MLFLOW_ENTRY, module


def test_layout_only_the_wiring_reads_a_hydra_config():
    """Below ``recmf.config`` (which turns a config into :mod:`recmf.settings` dataclasses) and
    ``recmf.cli`` (Hydra's entry point and callback) no module imports Hydra or OmegaConf, so
    what a function reads is on its signature."""
    readers = []
    for module, path in _modules().items():
        imported = _imports(path)
        if any(i.split(".")[0] in ("hydra", "omegaconf") for i in imported):
            readers.append(module)
    assert sorted(readers) == sorted(CONFIG_READERS)


def test_layout_only_tracking_calls_the_mlflow_client_behind_the_logger():
    """Lightning's MLFlowLogger hands out an MlflowClient as ``.experiment``: using it is calling
    MLflow, so that too stays in ``tracking``."""
    for module, path in _modules().items():
        if module.startswith("recmf.tracking"):
            continue
        tree = ast.parse(path.read_text())
        uses = [
            n.lineno
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and n.attr == "experiment"
        ]
        assert uses == [], f"{module} lines {uses}"


def test_layout_benchmarks_live_outside_the_installed_package():
    assert not [m for m in _modules() if "bench" in m or m.endswith(("speed", "rating_cv"))]
    assert (ROOT / "scripts" / "benchmark.py").is_file()
