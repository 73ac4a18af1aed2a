"""The layering of the top-level packages: each imports only the packages below it (lazy imports
inside functions included), and the import graph between them has no cycle.

    models       nothing of ours
    infra        models
    toyworld     models, infra
    stages       models, infra, toyworld
    evaluation   models, infra, toyworld
    training     models, infra, toyworld
    benchmarks   models, infra, toyworld, stages
    flows        everything except studies
    studies      everything

The model code and the job board (infra/jobs.py) import no Ray, Prefect or web framework.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ALLOWED: dict[str, frozenset[str]] = {
    "models": frozenset(),
    "infra": frozenset({"models"}),
    "toyworld": frozenset({"models", "infra"}),
    "stages": frozenset({"models", "infra", "toyworld"}),
    "evaluation": frozenset({"models", "infra", "toyworld"}),
    "training": frozenset({"models", "infra", "toyworld"}),
    "benchmarks": frozenset({"models", "infra", "toyworld", "stages"}),
    "flows": frozenset({"models", "infra", "toyworld", "stages", "evaluation", "training", "benchmarks"}),
    "studies": frozenset({"models", "infra", "toyworld", "stages", "evaluation", "training", "benchmarks", "flows"}),
}
PACKAGES = tuple(ALLOWED)

SERVICES = ("ray", "prefect", "fastapi", "starlette")
NO_SERVICES = ("models", "infra/jobs.py")
"""The model code and the job board are plain Python: Ray, Prefect and the web framework are
wired around them (stages/pools.py, flows/)."""


def imports(path: Path, tops: tuple[str, ...] = PACKAGES) -> list[tuple[int, str]]:
    """(line, module) of every absolute import of a package in ``tops`` anywhere in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        found += [(node.lineno, m) for m in modules if m.split(".")[0] in tops]
    return found


@cache
def edges() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> the 'file:line: import module' sites."""
    graph: dict[str, dict[str, list[str]]] = {p: {} for p in PACKAGES}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, module in imports(path):
                target = module.split(".")[0]
                if target != package:
                    site = f"{path.relative_to(ROOT)}:{line}: import {module}"
                    graph[package].setdefault(target, []).append(site)
    return graph


def test_every_package_of_the_table_exists():
    assert all((ROOT / p / "__init__.py").is_file() for p in PACKAGES)
    top_level = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert top_level <= set(PACKAGES), f"packages missing from the layering table: {top_level - set(PACKAGES)}"


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_layers_below_it(package):
    forbidden = [site for target, sites in edges()[package].items() if target not in ALLOWED[package]
                 for site in sites]
    allowed = ", ".join(sorted(ALLOWED[package])) or "nothing of ours"
    assert not forbidden, f"{package} may import {allowed}; forbidden:\n" + "\n".join(forbidden)


def test_the_package_graph_has_no_cycle():
    graph = {p: set(targets) for p, targets in edges().items()}
    state: dict[str, str] = {}

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (found := cycle_from(target, path + [target])):
                return found
        state[node] = "done"
        return None

    for package in PACKAGES:
        if package not in state and (cycle := cycle_from(package, [package])):
            sites = [site for a, b in zip(cycle, cycle[1:]) for site in edges()[a][b]]
            pytest.fail(" -> ".join(cycle) + ":\n" + "\n".join(sites))


@pytest.mark.parametrize("where", NO_SERVICES)
def test_the_models_and_the_job_board_import_no_service_framework(where):
    paths = sorted((ROOT / where).rglob("*.py")) if (ROOT / where).is_dir() else [ROOT / where]
    found = [f"{path.relative_to(ROOT)}:{line}: import {module}" for path in paths
             for line, module in imports(path, SERVICES)]
    assert not found, f"{where} may not import {', '.join(SERVICES)}:\n" + "\n".join(found)
