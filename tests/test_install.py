"""ambcore outside this checkout: a non-editable install in a fresh virtual environment, used
from an empty folder (the README's "Use a trained model", run as written).

The fresh environment gets the package only (``pip install --no-deps --no-build-isolation
--no-index``, from a copy of the sources); its dependencies come from the test's own
environment through a ``.pth`` line (no download, no second torch). Nothing of the checkout is
on its path: ``PYTHONPATH`` is cleared and the commands run in an empty folder.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from ambcore.paths import CHECKOUT_ROOT

pytestmark = pytest.mark.slow

SOURCES = (
    "ambcore",
    "experiments",
    "results",
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
)


def readme_snippet() -> str:
    """The Python block of README.md's "Use a trained model" section."""
    text = (CHECKOUT_ROOT / "README.md").read_text()
    section = text.split("\n## Use a trained model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section must have exactly one python block"
    return blocks[0]


def _copy_sources(target: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "_project")
    for name in SOURCES:
        source = CHECKOUT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, ambcore console script, environment) of a fresh venv with ambcore installed."""
    tmp = tmp_path_factory.mktemp("install")
    src = _copy_sources(tmp / "src")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The test environment's packages (torch, transformers, pip, setuptools...), after the venv's own.
    Path(purelib, "_test_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "AMB_RUNS", "AMB_RESULTS", "AMB_PRESET", "AMB_CACHE")
    }
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        AMB_CACHE=str(tmp / "cache"),
    )
    proc = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--no-cache-dir",
            str(src),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return python, venv / "bin" / "ambcore", env


def _run(args, cwd, env, timeout=300):
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_installed_package_is_not_the_checkout(installed, tmp_path):
    python, script, env = installed
    out = _run(
        [
            python,
            "-c",
            "import ambcore, ambcore.paths as p; "
            "print(ambcore.__file__); print(p.PROJECT_ROOT); print(p.runs_dir())",
        ],
        tmp_path,
        env,
    )
    module, root, runs = out.splitlines()
    assert "site-packages" in module and not module.startswith(str(CHECKOUT_ROOT))
    assert root.endswith("ambcore/_project") and Path(runs) == tmp_path / "runs"
    for name in (
        "experiments/ablation_smoke.yaml",
        "experiments/search_space.yaml",
        "results/thesis_tables.csv",
        "results/literature.csv",
    ):
        assert Path(root, name).is_file(), f"{name} is not shipped with the package"
    out = _run(
        [python, "-c", "import ambcore.paths as p; print(p.runs_dir())"],
        tmp_path,
        {**env, "AMB_RUNS": str(tmp_path / "elsewhere")},
    )
    assert out.strip() == str(tmp_path / "elsewhere")
    assert _run([script, "--help"], tmp_path, env).startswith("usage: ambcore ")
    assert _run([script, "--version"], tmp_path, env).strip() == "ambcore 0.1.0"


def test_train_then_the_readme_snippet_from_an_empty_folder(installed, tmp_path):
    python, script, env = installed
    _run([script, "train", "--preset", "smoke", "--no-progress"], tmp_path, env)
    run = tmp_path / "runs" / "train-smoke" / "amb-seed0"
    assert (run / "DONE").is_file() and (run / "best" / "README.md").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing else written here
    out = _run([python, "-c", readme_snippet()], tmp_path, env)
    scores = [float(x) for x in re.findall(r"-?\d+\.\d+(?:e[-+]?\d+)?", out)]
    assert len(scores) == 3 and all(-3.5 < s < 3.5 for s in scores), out


def test_the_book_outside_a_checkout_says_what_it_needs(installed, tmp_path):
    python, script, env = installed
    proc = subprocess.run(
        [str(script), "book", "--preset", "smoke", "--no-build"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: the book needs a checkout of the project")
    assert not list(tmp_path.iterdir())  # nothing written
