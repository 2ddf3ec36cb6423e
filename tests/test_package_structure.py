"""The package's shape: no import circle (module-level or lazy imports), and no branching on a stage's name
outside the stage table (`mesa_hf.training.recipes`): where stages differ, the difference is a `StageSpec` field."""

from __future__ import annotations

import ast
from pathlib import Path

from mesa_hf.training.recipes import STAGES

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SOURCE / "mesa_hf"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its file (inside functions too)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                imported = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{imported}.{alias.name}"
                    targets.add(full if full in modules else imported)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert "mesa_hf.experiments.ablation" in graph  # the experiment sits above training
    assert "mesa_hf.experiments.report" in graph["mesa_hf.experiments.ablation"]
    assert not any(name.startswith("mesa_hf.experiments") for name in graph["mesa_hf.training.runner"])
    assert import_cycles(graph) == []


def stage_name_comparisons(path: Path) -> list[str]:  # "path:line" of each
    """``stage == "geometric"``-like comparisons (==, !=, in, not in) of a stage or spec against a registered
    stage's name in `path` (the ablation's variants share names with stages: ``"masked" in summary`` is not one)."""
    names = set(STAGES)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        constants = [o.value for o in operands if isinstance(o, ast.Constant) and isinstance(o.value, str)]
        for o in operands:
            if isinstance(o, (ast.Tuple, ast.List, ast.Set)):
                constants += [e.value for e in o.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        subjects = [ast.unparse(o) for o in operands if not isinstance(o, (ast.Constant, ast.Tuple, ast.List, ast.Set))]
        if names & set(constants) and any("stage" in text or "spec" in text for text in subjects):
            found.append(f"{path}:{node.lineno}")
    return found


def test_no_branching_on_stage_names_outside_the_stage_table(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(
        'def f(stage, spec, summary):\n    a = stage == "geometric"\n    b = spec.name in ("masked", "x")\n'
        '    c = "masked" in summary\n'
    )
    assert stage_name_comparisons(planted) == [f"{planted}:2", f"{planted}:3"]
    scanned = [p for p in PACKAGE.rglob("*.py") if p.name != "recipes.py"]
    scanned += list((SOURCE.parent / "examples").glob("*.py")) + list((SOURCE.parent / "benchmarks").glob("*.py"))
    found = [hit for path in scanned for hit in stage_name_comparisons(path)]
    assert found == []
