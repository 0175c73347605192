"""The README's commands and CI stay one: CI runs the very test command the README gives."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "the README's first code block is gone"
    return [line for line in block[1].splitlines() if line and not line.startswith("#")]


def test_ci_runs_the_readmes_test_command():
    _, test = readme_commands()  # the first installs and runs an example
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci, f"{test!r} is not a line of .ci/run"
    assert test.startswith("scripts/dev-setup && ")


def test_the_readme_never_pip_installs_into_the_system_python():
    """Debian's and Ubuntu's python3 refuse it (PEP 668: externally-managed-environment)."""
    for command in readme_commands():
        assert not re.search(r"(^|&& )python3 -m pip install", command), command
        assert "pip install" not in command or ".venv/bin/pip" in command, command
