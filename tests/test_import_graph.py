"""The package's import graph has no cycle (module-level and function-level imports alike).

Lower layers never reach up: ``ambcore.noise`` (input corruption) sits with the data types,
``ambcore.robustness`` (a trained run under noise) above the trainer, and the synthetic
generator below the loaders that read its files.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ambcore"


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source.

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``. A
    module's own ancestors are left out: importing ``a.b.c`` always runs ``a`` and ``a.b`` first,
    which is not a dependency the module chose.
    """
    files = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package_name = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package_name.split(".")[
                        : len(package_name.split(".")) - node.level + 1
                    ]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in files]
                targets = submodules or [base]
            for target in targets:
                if target in files and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycle_in_ambcore():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    pkg = tmp_path / "ambcore"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from ambcore.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\n")
    (pkg / "c.py").write_text("from ambcore import a\n")
    graph = import_graph(pkg)
    assert graph["ambcore.a"] == {"ambcore.sub.b"} and graph["ambcore.c"] == {"ambcore.a"}
    assert find_cycle(graph) in (
        ["ambcore.a", "ambcore.sub.b", "ambcore.a"],
        ["ambcore.sub.b", "ambcore.a", "ambcore.sub.b"],
    )


def test_corruption_is_below_the_trainer():
    graph = import_graph()
    assert "ambcore.train" not in graph["ambcore.noise"]
    assert "ambcore.noise" in graph["ambcore.train"]
    assert "ambcore.train" in graph["ambcore.robustness"]
    assert "ambcore.data.loaders" not in graph["ambcore.data.synthetic"]


def test_the_book_has_one_room_per_job():
    """What the chapters show (pages) knows neither the main job (book) nor the Status page
    (status); the main job does not reach into the Status page, which reads the job's record."""
    graph = import_graph()
    assert not {"ambcore.book", "ambcore.status"} & graph["ambcore.pages"]
    assert "ambcore.status" not in graph["ambcore.book"]
    assert {"ambcore.book", "ambcore.pages"} <= graph["ambcore.status"]
    assert "ambcore.interrupt" in graph["ambcore.book"]  # signals: ambcore.interrupt alone
