"""The paper preset end to end, with only the sizes shrunk: every chapter runs and the book builds
strictly, on MOSEI-format files and a local bert-base-uncased stand-in folder.

The stand-in is the tiny one (``model standin --tiny``: 4 layers of width 32, bert-base's
vocabulary and tokenizer files): bert-base geometry on two CPU cores would take far longer than
CI affords, and the code path (a local Hugging Face folder passed as ``--plm``) is the same.
The sizes shrink through ``--set`` (config values for every chapter and run, ``AMB_SET``) and
``--param`` (chapter parameters): the command below is the documented dry run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from ambcore.book import CHAPTERS
from ambcore.paths import PROJECT_ROOT

pytestmark = pytest.mark.costly(180)  # about 180 s: started early (tests/conftest.py)

ROOT = PROJECT_ROOT
SHRINK = [
    "--set",
    "max_epochs=1",
    "--set",
    "patience=1",
    "--param",
    "n_seeds=1",
    "--param",
    "rates=[0.0, 1.0]",
    "--param",
    "n_draws=1",
    "--param",
    "parallel=1",
]


def _ambcore(*args: str, env: dict, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ambcore", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("paper-dry-run")
    shutil.copy2(ROOT / "_config.yml", work / "_config.yml")
    shutil.copytree(
        ROOT / "book",
        work / "book",
        symlinks=True,
        ignore=shutil.ignore_patterns("_build", "executed"),
    )
    (work / "results").mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AMB_DATA", "AMB_PLM", "AMB_SET", "AMB_PRESET")
    }
    env.update(
        AMB_RUNS=str(work / "runs"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    for args in (
        [
            "data",
            "synth",
            "--mosei-format",
            "--out",
            str(work / "data"),
            "--n-train",
            "24",
            "--n-valid",
            "12",
            "--n-test",
            "12",
        ],
        ["model", "standin", "--tiny", "--out", str(work / "bert-base-uncased")],
    ):
        proc = _ambcore(*args, env=env)
        assert proc.returncode == 0, proc.stderr
    data = work / "data" / "aligned_50.pkl"
    t0 = time.perf_counter()
    proc = _ambcore(
        "book",
        "--preset",
        "paper",
        "--data",
        str(data),
        "--plm",
        str(work / "bert-base-uncased"),
        "-W",
        "--no-sync",
        "--book-dir",
        str(work / "book"),
        "--results-dir",
        str(work / "results"),
        *SHRINK,
        env=env,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"paper dry run failed:\n{log[-6000:]}"
    print(f"paper dry run in {time.perf_counter() - t0:.0f} s")
    return work, log


def test_every_chapter_runs_on_the_paper_preset(dry_run):
    work, _ = dry_run
    timings = json.loads((work / "book" / "executed" / "timings.json").read_text())
    assert timings["book"]["preset"] == "paper"
    for chapter in CHAPTERS:
        entry = timings["chapters"][chapter.name]
        assert entry["status"] == "ok" and entry["preset"] == "paper", (chapter.name, entry)
        assert (work / "book" / "_build" / "html" / "executed" / f"{chapter.name}.html").is_file()


def test_sizes_shrink_for_every_run_and_the_rest_is_the_paper_preset(dry_run):
    from ambcore.config import get_config

    work, _ = dry_run
    paper = get_config("paper")
    configs = [json.loads(p.read_text()) for p in (work / "runs").glob("*/*/seed*/config.json")]
    cells = {p.parts[-3] for p in (work / "runs").glob("*/*/seed*/config.json")}
    assert {"amb", "amb-ft", "misa", "mag-bert", "amb-noise-aug"} <= cells
    assert len({p.parts[-4] for p in (work / "runs").glob("*/*/seed*/config.json")}) == 1
    for cfg in configs:
        assert cfg["max_epochs"] == 1 and cfg["patience"] == 1  # over the recipes too
        assert cfg["preset"] == "paper" and cfg["max_text_len"] == paper.max_text_len
        assert cfg["plm"].endswith("bert-base-uncased") and cfg["data"].endswith("aligned_50.pkl")
    amb = next(
        c
        for c in configs
        if c["model"] == "amb"
        and c["text_adaptation"] == "adapters"
        and c["variant"] == "full"
        and c["noise_augment_rate"] == 0
    )
    assert (amb["adapter_dim"], amb["fusion_hidden"], amb["lr"]) == (
        paper.adapter_dim,
        paper.fusion_hidden,
        paper.lr,
    )


def test_the_data_is_named_synthetic_in_the_book(dry_run):
    work, _ = dry_run
    page = (work / "book" / "_build" / "html" / "executed" / "04_ablation.html").read_text()
    assert "SYNTHETIC" in page


def test_readme_papermill_parameters_are_declared_by_the_chapter():
    """Every ``-p NAME`` of the README's papermill line is a parameter of its notebook."""
    import papermill

    readme = (ROOT / "README.md").read_text()
    lines = [line for line in readme.splitlines() if line.strip().startswith("papermill ")]
    assert lines, "the README shows no papermill command"
    for line in lines:
        notebook = re.search(r"papermill (\S+\.ipynb)", line).group(1)
        declared = set(papermill.inspect_notebook(str(ROOT / notebook)))
        names = re.findall(r"-p (\w+) ", line)
        assert names and set(names) <= declared, (line, sorted(declared))


def test_readme_papermill_line_runs_as_printed(dry_run, tmp_path):
    """The README's papermill command, with its placeholder paths replaced by the dry run's
    files and the sizes shrunk through AMB_SET."""
    import shlex

    work, _ = dry_run
    line = next(
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.strip().startswith("papermill ")
    )
    line = (
        line.replace("/path/aligned_50.pkl", str(work / "data" / "aligned_50.pkl"))
        .replace("/path/to/bert-base-uncased", str(work / "bert-base-uncased"))
        .replace("out.ipynb", str(tmp_path / "out.ipynb"))
    )
    argv = shlex.split(line)
    env = {k: v for k, v in os.environ.items() if k not in ("AMB_DATA", "AMB_PLM", "AMB_PRESET")}
    env.update(
        AMB_SET="max_epochs=1;patience=1",
        AMB_RUNS=str(tmp_path / "runs"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    exe = os.path.join(os.path.dirname(sys.executable), argv[0])
    proc = subprocess.run(
        [exe, *argv[1:], "--no-progress-bar"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    done = list((tmp_path / "runs").glob("paper-*/amb/seed0/DONE"))
    assert len(done) == 1  # the paper preset's AMB run, on the given data and PLM
    cfg = json.loads((done[0].parent / "config.json").read_text())
    assert cfg["plm"].endswith("bert-base-uncased") and cfg["max_epochs"] == 1
