"""pyproject.toml declares what the code imports: every third-party module the packages import is a
direct dependency (tests and benchmarks may also use the `dev` extra), and the data files the code
reads beside itself are package data."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions

import tomllib

from tests.conftest import REPO

PACKAGES = ("cluster", "crawl_actors", "dataset_jobs", "pac_lora", "train_jobs", "serve")
OWN = {*PACKAGES, "tests", "bench"}
# pydantic_core is pydantic's own compiled half; cluster/k8s/ (`python -m cluster.k8s`) is a
# development tool that validates manifests with the dev extra.
NOT_DIRECT = {"pydantic_core": "pydantic"}
DEV_TOOLS = {"cluster/k8s/core_schema.py"}  # kubernetes-validate

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _names(requirements: list[str]) -> set[str]:
    return {_normal(re.split(r"[\s\[<>=!~;@]", r.strip(), maxsplit=1)[0]) for r in requirements}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(folders: tuple[str, ...]) -> dict[str, set[str]]:
    """top-level third-party module -> the files that import it (at any depth in the file)."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in OWN and top != "__future__":
                        found.setdefault(top, set()).add(path.relative_to(REPO).as_posix())
    return found


def _undeclared(imports: dict[str, set[str]], declared: set[str], dev: set[str]) -> list[str]:
    distributions = packages_distributions()
    problems = []
    for module, files in sorted(imports.items()):
        provided_by = {_normal(d) for d in distributions.get(module, [])} or {_normal(module)}
        if module in NOT_DIRECT:
            provided_by = {_normal(NOT_DIRECT[module])}
        allowed = declared | dev if files <= DEV_TOOLS else declared
        if not provided_by & allowed:
            problems.append(f"{module} ({', '.join(sorted(provided_by))}) imported by {', '.join(sorted(files))}")
    return problems


def test_every_third_party_import_of_the_packages_is_a_declared_dependency() -> None:
    declared = _names(PROJECT["project"]["dependencies"])
    dev = _names(PROJECT["project"]["optional-dependencies"]["dev"])
    imports = _imports(PACKAGES)
    assert {"torch", "ray", "requests", "numpy", "fastapi"} <= set(imports)  # the scan sees lazy imports too
    assert _undeclared(imports, declared, dev) == []


def test_tests_and_benchmarks_import_only_declared_or_dev_dependencies() -> None:
    declared = _names(PROJECT["project"]["dependencies"]) | _names(PROJECT["project"]["optional-dependencies"]["dev"])
    imports = _imports(("tests", "bench"))
    assert "PIL" in imports and "pytest" in imports
    assert _undeclared(imports, declared, set()) == []


def test_an_undeclared_import_is_reported() -> None:
    assert _undeclared({"yaml": {"cluster/x.py"}}, set(), set()) == ["yaml (pyyaml) imported by cluster/x.py"]
    assert _undeclared({"jsonschema": {"cluster/k8s/core_schema.py"}}, set(), {"jsonschema"}) == []  # dev tool


def test_data_files_the_code_reads_are_package_data() -> None:
    data = PROJECT["tool"]["setuptools"]["package-data"]
    for package, patterns in data.items():
        folder = REPO / package.replace(".", "/")
        for pattern in patterns:
            assert list(folder.glob(pattern)), f"package-data {package}: {pattern} matches no file"
    assert "serve_config.yaml" in data["serve"] and "sentiment_sample.tsv" in data["serve.sentiment"]


def test_the_build_backend_reads_the_spdx_license() -> None:
    assert isinstance(PROJECT["project"]["license"], str)  # an SPDX expression: setuptools >= 77
    assert "setuptools>=77" in PROJECT["build-system"]["requires"]
