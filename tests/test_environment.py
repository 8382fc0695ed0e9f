"""The dependencies, declared once and pinned once.

- ``pyproject.toml``: what ``ambcore`` imports, with compatible ranges (``dependencies``), and the
  extras ``book`` (the research book's stack) and ``dev`` (the tests).
- ``constraints.txt``: the exact version of every declared package, inside its range; torch at
  exactly 2.13.0. ``scripts/setup.sh`` installs ``.[dev,book]`` with it; ``environment.yml``
  mirrors its lines.
- Every third-party import of the package, the chapters and the tests is declared, and every
  declared package is imported somewhere or named in ``USED_WITHOUT_IMPORT`` with its use.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from ambcore.paths import PROJECT_ROOT

# Declared packages that the code runs without importing them, and how it uses them.
USED_WITHOUT_IMPORT = {
    "jupyter-book": "the `jupyter-book build` command (ambcore.book)",
    "sphinxcontrib-bibtex": "a Sphinx extension named in _config.yml",
    "sphinx-mathjax-offline": "a Sphinx extension named in _config.yml",
    "ipykernel": "the chapters' kernel (scripts/setup.sh installs its spec)",
    "ruff": "the formatter and linter of .ci/run",
    "matplotlib-inline": "the kernels' MPLBACKEND (ambcore.book)",
    "jupyterlab": "`jupyter lab notebooks/` (README; tests/test_jupyterlab.py)",
    "nbval": "the pytest plugin of `pytest --nbval` (scripts/test.sh)",
    "pytest-xdist": "the pytest plugin of `pytest -n` (scripts/test.sh)",
}
# Pinned in constraints.txt without being declared: they shape the numbers, or the time every
# notebook takes to start (see its comments).
PINNED_TRANSITIVE = {"tokenizers", "sentence-transformers", "jsonschema"}


def _project() -> dict:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]


def _declared() -> dict[str, dict[str, Requirement]]:
    """group ("dependencies", "book", "dev") -> {canonical name: requirement}."""
    meta = _project()
    groups = {"dependencies": meta["dependencies"], **meta["optional-dependencies"]}
    return {
        g: {canonicalize_name(Requirement(r).name): Requirement(r) for r in reqs}
        for g, reqs in groups.items()
    }


def _lines(path: Path) -> list[str]:
    return [
        line.split("#")[0].strip()
        for line in path.read_text().splitlines()
        if line.split("#")[0].strip()
    ]


def _constraints() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in _lines(PROJECT_ROOT / "constraints.txt"):
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"constraints.txt: {line!r} is not an exact pin"
        name = canonicalize_name(req.name)
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = Version(spec.version)
    return pins


def test_every_declared_package_is_pinned_once_within_its_range():
    pins = _constraints()
    declared = {name: req for group in _declared().values() for name, req in group.items()}
    for name, req in declared.items():
        assert name in pins, f"constraints.txt has no pin for {name} (declared in pyproject.toml)"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {req}"
        )
        assert "==" not in str(req.specifier), f"pyproject.toml pins {req} exactly; give a range"
    undeclared = set(pins) - set(declared)
    assert undeclared <= PINNED_TRANSITIVE, (
        f"pins of undeclared packages: {sorted(undeclared - PINNED_TRANSITIVE)}"
    )


def test_torch_is_pinned_exactly_and_not_by_the_library():
    assert _constraints()["torch"] == Version("2.13.0")
    torch = _declared()["dependencies"]["torch"]
    assert torch.specifier.contains("2.13.0") and torch.specifier.contains("2.14.1")


def test_the_book_stack_is_an_extra_not_a_requirement():
    core = set(_declared()["dependencies"])
    for name in (
        "jupyter-book",
        "papermill",
        "jupytext",
        "jupyterlab",
        "nbval",
        "pytest",
        "ipykernel",
    ):
        assert name not in core, f"{name} is a library requirement; it belongs to an extra"
    assert {"jupyter-book", "papermill", "jupytext", "jupyterlab"} <= set(_declared()["book"])


def test_environment_yml_mirrors_constraints():
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml must have exactly one pip: section"
    normalise = lambda deps: sorted(d.replace(" ", "").lower() for d in deps)  # noqa: E731
    pins = [d for d in pip_sections[0] if not d.startswith("-e")]
    assert normalise(pins) == normalise(_lines(PROJECT_ROOT / "constraints.txt"))
    assert [d for d in pip_sections[0] if d.startswith("-e")] == ["-e .[dev,book]"]
    assert "python=3.11" in env["dependencies"]


def test_setup_installs_both_extras_with_the_constraints():
    text = (PROJECT_ROOT / "scripts" / "setup.sh").read_text()
    assert re.search(r'pip install .*-e "\.\[dev,book\]" -c constraints\.txt', text)
    stamp = next(line for line in text.splitlines() if line.startswith("want="))
    assert "pyproject.toml" in stamp and "constraints.txt" in stamp  # a change reinstalls


def _third_party_imports(paths) -> dict[str, set[str]]:
    """top-level module -> the files that import it (not stdlib, not ambcore)."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "ambcore":
                    found.setdefault(top, set()).add(str(path.relative_to(PROJECT_ROOT)))
    return found


def _distribution(module: str) -> str | None:
    dists = importlib.metadata.packages_distributions().get(module)
    return canonicalize_name(dists[0]) if dists else None


def test_every_import_is_declared_and_every_declaration_used():
    declared = _declared()
    allowed = {
        "ambcore": set(declared["dependencies"]) | set(declared["book"]),
        "notebooks": set(declared["dependencies"]) | set(declared["book"]),
        "tests": {n for group in declared.values() for n in group},
    }
    local = {p.stem for p in (PROJECT_ROOT / "tests").rglob("*.py")}  # helper modules of tests
    used: set[str] = set()
    for folder, pattern in (("ambcore", "**/*.py"), ("notebooks", "*.py"), ("tests", "**/*.py")):
        imports = _third_party_imports(sorted((PROJECT_ROOT / folder).glob(pattern)))
        for module, files in sorted(imports.items()):
            if folder == "tests" and module in local:
                continue
            dist = _distribution(module)
            assert dist is not None, f"{module} (imported by {sorted(files)[0]}) is not installed"
            assert dist in allowed[folder], (
                f"{sorted(files)[0]} imports {module} (distribution {dist}), which pyproject.toml "
                f"does not declare for {folder}/"
            )
            used.add(dist)
    unused = {n for group in declared.values() for n in group} - used - set(USED_WITHOUT_IMPORT)
    assert not unused, f"declared but never imported: {sorted(unused)}"


def test_nbformat_imports_no_grammar_compiler():
    # Every chapter's kernel, papermill and nbval import nbformat; with jsonschema >= 4.24 that
    # compiled rfc3987-syntax's 39 Earley parsers, 4 s per process (constraints.txt).
    code = "import sys, nbformat; print(sorted({'rfc3987_syntax', 'lark'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
