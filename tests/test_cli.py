"""The command line as a user meets it: its name, --version, what --help costs, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ambcore.cli import COMMANDS, build_parser, command_name, main
from ambcore.paths import CHECKOUT_ROOT

HEAVY = ("torch", "transformers", "sklearn", "pandas")


def _python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=CHECKOUT_ROOT,
    )


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], ["data", "inspect", "synthetic", "--preset", "smoke"]]
)
def test_help_version_and_data_inspect_load_no_torch(argv):
    proc = _python(
        f"import sys; from ambcore.cli import main; code = main({argv!r}); "
        f"print(code, [m for m in {HEAVY!r} if m in sys.modules])"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "0 []"


def test_usage_names_the_command_as_invoked(capsys):
    assert command_name("/somewhere/bin/ambcore") == "ambcore"
    assert command_name("/somewhere/ambcore/__main__.py") == "python -m ambcore"
    assert (
        build_parser([], prog=command_name("/x/bin/ambcore"))
        .format_usage()
        .startswith("usage: ambcore ")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "ambcore", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(CHECKOUT_ROOT)},
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m ambcore ")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("ambcore ")


def test_the_top_level_help_lists_what_the_commands_register():
    """COMMANDS' one-line helps are the ones the command modules give their commands."""
    full = build_parser()  # every module imported
    sub = next(a for a in full._actions if a.dest == "command")
    helps = {action.dest: action.help for action in sub._choices_actions}
    assert {name: text for name, (_, text) in COMMANDS.items()} == helps


def test_exit_codes(tmp_path, capsys):
    assert main(["nope"]) == 2  # unknown command: usage
    assert main([]) == 2
    assert main(["train", "--no-such-option"]) == 2
    assert main(["train", "--preset", "nope", "--out", str(tmp_path / "r")]) == 2  # not a choice
    capsys.readouterr()
    for argv in (
        ["evaluate", str(tmp_path)],  # not a run folder
        ["train", "--preset", "smoke", "--out", str(tmp_path / "r"), "--set", "lr=-1"],
    ):
        assert main(argv) == 1  # the command failed: one line
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_interruption_exits_130_or_143(sig, code):
    proc = _python(
        "import os, signal, sys, time\n"
        "import ambcore.commands.data as data\n"
        f"data.run_inspect = lambda args: (os.kill(os.getpid(), signal.{sig}), time.sleep(30))\n"
        "from ambcore.cli import main\n"
        "sys.exit(main(['data', 'inspect', 'synthetic']))\n"
    )
    assert proc.returncode == code, proc.stderr
    assert f"interrupted by {sig}" in proc.stderr and "Traceback" not in proc.stderr
