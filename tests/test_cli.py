"""scripts/_cli.py and the installed console commands: one ``error:`` line, never a traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from recommender.errors import BuildError, LookalikeError
from scripts._cli import positive_int, run_cli
from tests.recommender_helpers import SCRIPT_ENV, error_line

COMMANDS = ("lookalike-bot", "lookalike-build-index", "lookalike-query", "lookalike-evaluate")


def test_positive_int_accepts_counts_and_refuses_the_rest():
    assert positive_int("5") == 5
    for text, message in (("0", "at least 1"), ("-3", "at least 1"), ("five", "whole number"), ("2.5", "whole number")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            positive_int(text)


def test_run_cli_turns_every_lookalike_error_into_one_line(capsys):
    def fails() -> int:
        raise BuildError("Cannot write to /nowhere: permission denied.")

    with pytest.raises(SystemExit) as stopped:
        run_cli(fails)
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: Cannot write to /nowhere: permission denied.\n"


def test_run_cli_lets_bugs_keep_their_traceback():
    def buggy() -> int:
        raise KeyError("not an operator mistake")

    assert not issubclass(KeyError, LookalikeError)
    with pytest.raises(KeyError):
        run_cli(buggy)


def test_run_cli_reports_os_errors_with_the_file(capsys):
    def unreadable() -> int:
        raise PermissionError(13, "Permission denied", "/srv/catalogue/styles.csv")

    with pytest.raises(SystemExit):
        run_cli(unreadable)
    assert capsys.readouterr().err == "error: Permission denied: /srv/catalogue/styles.csv\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_console_commands_are_installed(command):
    """``make`` installs the package; each operator command answers --help without a traceback."""
    path = Path(sys.executable).parent / command
    assert path.is_file(), f"{command} is not installed beside {sys.executable}: run make venv"
    if command == "lookalike-bot":
        return  # the bot has no --help: it starts (covered by the bot end-to-end tests)
    result = subprocess.run([str(path), "--help"], env=SCRIPT_ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: lookalike-")


def test_console_command_reports_an_operator_mistake_in_one_line(tmp_path):
    command = Path(sys.executable).parent / "lookalike-query"
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not really a photo")
    result = subprocess.run(
        [str(command), str(photo), "--index", str(tmp_path / "no-index")], env=SCRIPT_ENV, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "No catalogue index at" in error_line(result)
