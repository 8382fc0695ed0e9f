"""The training chapter on CMU-MOSI- and CH-SIMS-format files (``data synth --format``), as the
README's commands run it: papermill on ``notebooks/03_train.ipynb`` with the smoke preset and the
dataset declared (``-y 'overrides: [dataset=...]'``). MOSI runs with the smoke preset's tiny
random BERT; SIMS' Chinese text with a tiny random BERT folder written here whose vocabulary is
the generator's Chinese characters (the code path of a local bert-base-chinese folder passed as
``plm``). Each run trains AMB with the dataset's own feature sizes (MOSI 20/5, SIMS 709/33)."""

from __future__ import annotations

import json
import os
import pickle
import shlex
import subprocess
import sys

import numpy as np
import pytest

from ambcore.cli import main
from ambcore.paths import PROJECT_ROOT

pytestmark = pytest.mark.costly(30)  # about 30 s: started early (tests/conftest.py)

ROOT = PROJECT_ROOT
SIZES = ["--n-train", "24", "--n-valid", "12", "--n-test", "12"]


def write_tiny_chinese_bert(out) -> None:
    """A BERT of width 32 with 2 layers and RANDOM weights over a character vocabulary: the
    special tokens and every character ``ambcore.data.synthetic_zh`` writes."""
    import torch
    from transformers import BertConfig, BertModel

    from ambcore.data.synthetic_zh import CHARACTERS

    out.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CHARACTERS]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = {"tokenizer_class": "BertTokenizer", "do_lower_case": False}
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(config).save_pretrained(out)


def _readme_lines(prefix: str) -> list[str]:
    """The lines of the README's MOSI/SIMS subsection that start with ``prefix``."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n### CMU-MOSI and CH-SIMS\n", 1)[1].split("\n### ", 1)[0]
    return [line for line in section.splitlines() if line.startswith(prefix)]


def _as_run_here(line: str, work) -> list[str]:
    """A README command line with its /tmp and model paths moved into ``work``."""
    line = line.replace("/tmp/", f"{work}/").replace(
        "/path/to/bert-base-chinese", str(work / "tiny-chinese-bert")
    )
    return shlex.split(line)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The README's ``data synth --format`` commands, run as printed (paths moved)."""
    work = tmp_path_factory.mktemp("mosi-sims")
    write_tiny_chinese_bert(work / "tiny-chinese-bert")
    lines = _readme_lines("python -m ambcore data synth --format")
    assert len(lines) == 2, lines
    for line in lines:
        assert main(_as_run_here(line, work)[3:]) == 0  # without "python -m ambcore"
    return work


def test_sims_text_bert_uses_the_given_chinese_tokenizer(work, tmp_path):
    from transformers import AutoTokenizer

    plm = work / "tiny-chinese-bert"
    args = ["--format", "sims", "--out", str(tmp_path), "--tokenizer", str(plm)]
    assert main(["data", "synth", *args, "--n-train", "6", "--n-valid", "2", "--n-test", "2"]) == 0
    raw = pickle.loads((tmp_path / "unaligned_39.pkl").read_bytes())
    tokenizer = AutoTokenizer.from_pretrained(plm, local_files_only=True)
    ids, mask = raw["train"]["text_bert"][:, 0], raw["train"]["text_bert"][:, 1]
    assert (ids[:, 0] == tokenizer.cls_token_id).all()
    assert not np.isin(ids[mask == 1], [tokenizer.unk_token_id]).any()  # every character known
    first = raw["train"]["raw_text"][0]
    assert mask[0].sum() == min(len(first) + 2, 39)  # one token per character


def _isolated(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AMB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("AMB_RESULTS", str(tmp_path / "results"))
    for key in ("AMB_SET", "AMB_DATA", "AMB_PLM", "AMB_PRESET"):
        monkeypatch.delenv(key, raising=False)


def _run_folder(tmp_path, pattern: str):
    (done,) = (tmp_path / "runs").glob(pattern)
    run = done.parent
    config = json.loads((run / "config.json").read_text())
    return config, json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_readme_training_chapter_line_runs_on_mosi_format_files(work, tmp_path, monkeypatch):
    """The README's papermill line on the MOSI file, as printed (paths moved)."""
    _isolated(monkeypatch, tmp_path)
    (line,) = _readme_lines("papermill notebooks/03_train.ipynb")
    argv = [str(tmp_path / a) if a == "out.ipynb" else a for a in _as_run_here(line, work)]
    exe = os.path.join(os.path.dirname(sys.executable), argv[0])
    proc = subprocess.run(
        [exe, *argv[1:], "--no-progress-bar"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    cfg, metrics = _run_folder(tmp_path, "smoke-*/amb/seed0/DONE")
    assert cfg["dataset"] == "mosi" and cfg["data"] == str(work / "mosi" / "aligned_50.pkl")
    assert metrics["data"].startswith("SYNTHETIC MOSI-shaped") and metrics["test"]["n"] == 12
    assert np.isfinite(metrics["test"]["mae"])


@pytest.mark.slow
def test_training_chapter_runs_on_sims_format_files_with_a_chinese_plm(work, tmp_path, monkeypatch):
    import papermill

    _isolated(monkeypatch, tmp_path)  # the kernel inherits this environment
    data, plm = work / "sims" / "unaligned_39.pkl", work / "tiny-chinese-bert"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "03_train.ipynb"),
        str(tmp_path / "out.ipynb"),
        kernel_name="python3",
        parameters={
            "preset": "smoke",
            "data": str(data),
            "plm": str(plm),
            "overrides": ["dataset=sims"],
        },
        progress_bar=False,
        cwd=str(ROOT / "notebooks"),
    )
    cfg, metrics = _run_folder(tmp_path, "smoke-*/amb/seed0/DONE")
    assert cfg["dataset"] == "sims" and cfg["plm"] == str(plm)
    assert metrics["data"].startswith("SYNTHETIC CH-SIMS-shaped") and metrics["test"]["n"] == 12
    assert np.isfinite(metrics["test"]["mae"])


@pytest.mark.slow
def test_readme_train_line_runs_the_paper_preset_on_sims(work, tmp_path, monkeypatch):
    """The README's ``train --preset paper`` line on the SIMS file, the Chinese PLM folder in
    place of bert-base-chinese and one epoch."""
    _isolated(monkeypatch, tmp_path)
    (line,) = _readme_lines("python -m ambcore train --preset paper")
    out = tmp_path / "runs" / "sims-paper"
    argv = _as_run_here(line, work)[3:]
    shrink = ["--set", "max_epochs=1", "--set", "patience=1", "--no-progress", "--out", str(out)]
    assert main([*argv, *shrink]) == 0
    cfg, metrics = _run_folder(tmp_path, "sims-paper/DONE")
    assert cfg["preset"] == "paper" and cfg["dataset"] == "sims"
    assert metrics["data"].startswith("SYNTHETIC CH-SIMS-shaped")
