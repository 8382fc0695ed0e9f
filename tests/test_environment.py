"""The two ways to install (pip from pyproject.toml, conda from environment.yml) must agree."""

import tomllib

import yaml

from ambcore.paths import PROJECT_ROOT


def _pyproject_deps() -> list[str]:
    meta = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return meta["dependencies"] + meta["optional-dependencies"]["dev"]


def _conda_pip_deps() -> list[str]:
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml must have exactly one pip: section"
    return [d for d in pip_sections[0] if not d.startswith("-e")]


def test_every_dependency_is_pinned():
    for dep in _pyproject_deps():
        assert "==" in dep, f"pyproject.toml dependency {dep!r} is not pinned with =="


def test_environment_yml_matches_pyproject():
    normalise = lambda deps: sorted(d.replace(" ", "").lower() for d in deps)  # noqa: E731
    assert normalise(_conda_pip_deps()) == normalise(_pyproject_deps())


def test_environment_yml_python_version():
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
