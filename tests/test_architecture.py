"""The layering rule of docs/architecture.md, read from the code's own imports (every import
statement, also those inside functions).

- no import cycle between modules;
- the foundation (cluster, less its entry modules) imports nothing of ours above it;
- pac_lora, the model library, imports nothing of ours;
- a stage imports the foundation, pac_lora and another stage only through that package's public
  surface (`from pac_lora import X`, X in its `__all__`), and only along the allowed edges;
- the entry layer (CLI, registry, submit, demo, k8s checks, every `__main__`) knows stages by
  module name (cluster/stages.py), never by import;
- nobody imports another unit's private (`_name`) names.

Each rule is shown failing on a deliberate violation in a small tree built by the test itself.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PACKAGES, REPO

ENTRY = ("cluster.cli", "cluster.stages", "cluster.submit", "cluster.demo", "cluster.k8s", "cluster.__main__")
LIBRARY = "pac_lora"
STAGES = ("crawl_actors", "dataset_jobs", "train_jobs", "serve", "serve.evaluate")
STAGE_EDGES = {("serve.evaluate", "serve")}  # evaluation labels posts with serve's sentiment labellers


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module
    names: tuple[str, ...]  # names taken from it (empty for `import x` or a submodule)
    line: int

    def __str__(self) -> str:
        taken = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.source}:{self.line} -> {self.target}{taken}"


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(root: Path, packages: tuple[str, ...]) -> list[Import]:
    known = modules(root, packages)
    found = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        script = {id(node) for block in tree.body if _is_main_block(block) for node in ast.walk(block)}
        for node in ast.walk(tree):
            source = f"{name}.__main__" if id(node) in script else name  # `if __name__ == "__main__":` is a script
            if isinstance(node, ast.Import):
                found += [Import(source, alias.name, (), node.lineno) for alias in node.names if _ours(alias.name)]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level and _ours(node.module, packages):
                found += _from_import(source, node, known)
    return found


def _is_main_block(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test)


def _from_import(source: str, node: ast.ImportFrom, known: dict[str, Path]) -> list[Import]:
    """`from a import b` takes the submodule a.b when there is one, else the name b of a."""
    submodules = [alias.name for alias in node.names if f"{node.module}.{alias.name}" in known]
    names = tuple(alias.name for alias in node.names if alias.name not in submodules)
    found = [Import(source, f"{node.module}.{sub}", (), node.lineno) for sub in submodules]
    return found + ([Import(source, node.module, names, node.lineno)] if names else [])


def _ours(module: str, packages: tuple[str, ...] = PACKAGES) -> bool:
    return module.split(".")[0] in packages


def unit(module: str) -> str:
    """Which part of the house a module belongs to: entry, foundation, library, or a stage."""
    if module in ENTRY or any(module.startswith(f"{e}.") for e in ENTRY) or module.endswith(".__main__"):
        return "entry"
    if module.split(".")[0] == "cluster":
        return "foundation"
    if module.split(".")[0] == LIBRARY:
        return LIBRARY
    return max((s for s in STAGES if module == s or module.startswith(f"{s}.")), key=len)


def violations(found: list[Import], surfaces: dict[str, set[str]]) -> list[str]:
    """Every import that breaks a layering rule, as a line naming it and the rule."""
    problems = []
    for item in found:
        source, target = unit(item.source), unit(item.target)
        if source == target or _own_script(item):
            continue
        private = [name for name in item.names if name.startswith("_")]
        if private:
            problems.append(f"{item}: private name of another unit")
        elif target == "entry":
            problems.append(f"{item}: imports the entry layer (only __main__ modules and the entry layer may)")
        elif source == "foundation" and target != "foundation":
            problems.append(f"{item}: the foundation imports nothing above it")
        elif source == LIBRARY:
            problems.append(f"{item}: pac_lora imports nothing of ours")
        elif source == "entry" and target not in ("foundation", LIBRARY):
            problems.append(f"{item}: the entry layer knows stages by module name (cluster/stages.py), not by import")
        elif target == LIBRARY or (source, target) in STAGE_EDGES:
            problems += _through_surface(item, target, surfaces)
        elif target != "foundation":
            problems.append(f"{item}: stage {source} imports stage {target}")
    return problems


def _own_script(item: Import) -> bool:
    """A package's `__main__` runs that package: it may use its insides."""
    package = item.source.removesuffix(".__main__")
    return item.source.endswith(".__main__") and (item.target == package or item.target.startswith(f"{package}."))


def _through_surface(item: Import, target: str, surfaces: dict[str, set[str]]) -> list[str]:
    if item.target != target:
        return [f"{item}: reaches inside {target}; import from `{target}` (its public surface)"]
    hidden = [name for name in item.names if name not in surfaces.get(target, set())]
    return [f"{item}: {', '.join(hidden)} not in {target}.__all__"] if hidden else []


def public_surface(root: Path, package: str) -> set[str]:
    """`__all__` of a package's __init__.py, read without importing it."""
    init = root / package.replace(".", "/") / "__init__.py"
    for node in ast.walk(ast.parse(init.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return _names_in(node.value)
    return set()


def _names_in(value: ast.expr) -> set[str]:
    """The strings of a list or tuple literal (a computed `__all__` is read through `_EXPORTS`)."""
    if isinstance(value, (ast.List, ast.Tuple)):
        return {element.value for element in value.elts if isinstance(element, ast.Constant)}
    return set()


def cycles(found: list[Import]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for item in found:
        graph.setdefault(item.source, set()).add(item.target)
        graph.setdefault(item.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def surfaces_of(root: Path) -> dict[str, set[str]]:
    return {package: _surface(root, package) for package in (LIBRARY, "serve") if (root / package).is_dir()}


def _surface(root: Path, package: str) -> set[str]:
    init = root / package / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    names = public_surface(root, package)
    for node in ast.walk(tree):  # lazy surfaces: `_EXPORTS = {"name": "module", ...}; __all__ = sorted(_EXPORTS)`
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            names |= {key.value for key in node.value.keys if isinstance(key, ast.Constant)}
    return names


# --- the house as it stands ------------------------------------------------------------------------


def test_no_import_cycle_between_modules() -> None:
    assert cycles(imports(REPO, PACKAGES)) == []


def test_every_import_follows_the_layering_rule() -> None:
    assert violations(imports(REPO, PACKAGES), surfaces_of(REPO)) == []


def test_every_module_belongs_to_a_known_unit() -> None:
    for module in modules(REPO, PACKAGES):
        assert unit(module) in ("entry", "foundation", LIBRARY, *STAGES), module


def test_the_registry_names_real_config_models_and_runners() -> None:
    from cluster.stage_config import StageConfig
    from cluster.stages import STAGES as REGISTRY

    for stage in REGISTRY.values():
        assert issubclass(stage.config_model(), StageConfig), stage.name
        assert callable(stage.load_runner()), stage.name
        assert importlib.util.find_spec(stage.module) is not None, stage.module
        for action in stage.actions:
            assert callable(stage.load_action(action)), (stage.name, action)


# --- each rule fails on a deliberate violation ---------------------------------------------------------


def _house(tmp_path: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch(exist_ok=True)
    return tmp_path


CLEAN = {
    "cluster/config.py": "import yaml\n",
    "cluster/cli.py": "from cluster.config import load_config\nimport importlib\n",
    "pac_lora/__init__.py": "__all__ = ['apply']\nfrom pac_lora.model import apply\n",
    "pac_lora/model.py": "def apply(): pass\n",
    "crawl_actors/job.py": "from cluster.config import load_config\n",
    "crawl_actors/__main__.py": "from cluster.cli import main\n",
    "train_jobs/model.py": "from pac_lora import apply\n",
    "serve/__init__.py": "_EXPORTS = {'make_labeler': 'serve.sentiment'}\n__all__ = sorted(_EXPORTS)\n",
    "serve/sentiment.py": "def make_labeler(): pass\n",
    "serve/evaluate/__init__.py": "",
    "serve/evaluate/job.py": "from serve import make_labeler\n",
}

BROKEN = {
    "upward import from the foundation": (
        {"cluster/parquet.py": "def read():\n    from crawl_actors.job import load_config\n"},
        "the foundation imports nothing above it",
    ),
    "entry layer importing a stage": (
        {"cluster/demo.py": "from train_jobs.model import apply\n"},
        "knows stages by module name",
    ),
    "stage importing another stage": ({"dataset_jobs/job.py": "from crawl_actors.job import x\n"}, "imports stage"),
    "reaching inside the library": ({"serve/engine.py": "from pac_lora.model import apply\n"}, "reaches inside"),
    "a name off the public surface": ({"serve/engine.py": "from pac_lora import secret_sauce\n"}, "not in pac_lora"),
    "a private name": ({"serve/evaluate/report.py": "from serve import _helper\n"}, "private name"),
    "the library importing us": ({"pac_lora/layer.py": "from cluster.config import load_config\n"}, "pac_lora imports"),
    "a stage importing the entry layer": ({"serve/app.py": "from cluster.submit import submit\n"}, "entry layer"),
}


def test_the_clean_fixture_house_passes(tmp_path: Path) -> None:
    root = _house(tmp_path, CLEAN)
    found = imports(root, PACKAGES)
    assert violations(found, surfaces_of(root)) == [] and cycles(found) == []


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_a_deliberate_violation_is_named(tmp_path: Path, case: str) -> None:
    extra, expected = BROKEN[case]
    root = _house(tmp_path, {**CLEAN, **extra})
    problems = violations(imports(root, PACKAGES), surfaces_of(root))
    assert len(problems) == 1 and expected in problems[0], problems
    assert next(iter(extra)).removesuffix(".py").replace("/", ".") in problems[0]


def test_a_deliberate_cycle_is_found(tmp_path: Path) -> None:
    root = _house(tmp_path, {
        **CLEAN,
        "serve/api.py": "from serve.schemas import Request\n",
        "serve/schemas.py": "def f():\n    from serve.api import handler\n",
    })
    assert cycles(imports(root, PACKAGES)) == [["serve.api", "serve.schemas"]]

