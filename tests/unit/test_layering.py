"""The layering the architecture promises, checked on the source: stages are leaves, the science
package never reaches up into the harness or the trackers, and no two modules import each other
(counting imports inside functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("mindvideo", "harness")
STAGE_INTERFACE = {"mindvideo.stages", "mindvideo.stages.base", "mindvideo.stages.registry"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module -> the modules it imports (anywhere in its code), resolved to our own modules
    where they are ours (`from a.b import c` counts a.b.c when c is a module)."""
    paths = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    ours = {module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in ours else node.module)
        graph[module_name(path)] = found
    return graph


def test_no_stage_imports_another_stage():
    offenders = [
        f"{module} imports {target}"
        for module, targets in imports().items()
        if module.startswith("mindvideo.stages.") and module not in STAGE_INTERFACE
        for target in targets
        if target.startswith("mindvideo.stages.") and target not in STAGE_INTERFACE
    ]
    assert not offenders, "stages must not import each other:\n" + "\n".join(offenders)


def test_below_the_stages_nothing_imports_a_stage():
    offenders = [
        f"{module} imports {target}"
        for module, targets in imports().items()
        if module.startswith("mindvideo.") and not module.startswith("mindvideo.stages")
        for target in targets
        if target.startswith("mindvideo.stages")
    ]
    assert not offenders, "\n".join(offenders)


def test_mindvideo_never_imports_harness_mlflow_or_optuna():
    offenders = [
        f"{module} imports {target}"
        for module, targets in imports().items()
        if module.split(".")[0] == "mindvideo"
        for target in targets
        if target.split(".")[0] in ("harness", "mlflow", "optuna")
    ]
    assert not offenders, "\n".join(offenders)


def test_no_import_cycles():
    graph = imports()
    own = {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}
    # a package's __init__ importing its own submodules is not a cycle of two modules
    cycles, state = [], dict.fromkeys(own, 0)  # 0 new, 1 on the path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(own[module]):
            if state[target] == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif state[target] == 0:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(own):
        if state[module] == 0:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_harness_reaches_stages_only_through_their_interface():
    offenders = [
        f"{module} imports {target}"
        for module, targets in imports().items()
        if module.startswith("harness")
        for target in targets
        if target.startswith("mindvideo.stages.") and target not in STAGE_INTERFACE
    ]
    assert not offenders, "harness may import the stage interface only:\n" + "\n".join(offenders)
