"""Numbers on the command line: nan and inf are refused by every option that takes a float.

`--keepalive nan` used to be accepted, and every connection then dropped: nan compares false
with everything, so any bound it sets is silently never (or always) reached.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from anet.cli import raw_main
from anet.cli.common import Environment


def options(tmp_path: Path) -> list[tuple[str, list[str]]]:
    """(what the error names, argv) for every float option; if the value were accepted, each
    command would stop at once, harmlessly (a missing batch, a refused port, no match)."""
    batch, deps = str(tmp_path / "missing.txt"), str(tmp_path / "deps")
    real = tmp_path / "batch.txt"
    real.write_text("true\n")
    return [
        ("--keepalive", ["run", batch, "--keepalive", "{}"]),
        ("--halt", ["run", batch, "--halt", "now,fail={}"]),
        ("--halt", ["run", batch, "--halt", "soon,fail={}%"]),
        ("timeout", ["run", str(real), "--no-journal", "--timeout", "{}"]),  # checked by then
        ("--keepalive", ["sync", deps, "--keepalive", "{}"]),
        ("--grace", ["killall", "--dry-run", "no-such-process-anywhere-x9", "--grace", "{}"]),
        ("--timeout", ["hosts", "check", "-S", "127.0.0.1:1", "--timeout", "{}"]),
        ("--timeout", ["hosts", "scan", "127.0.0.1", "-p", "1", "--no-check", "--timeout", "{}"]),
    ]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
def test_no_float_option_takes_nan_or_inf(tmp_path, value):
    for option, argv in options(tmp_path):
        with open(tmp_path / "stdout", "wb") as stdout:
            env = Environment(stdout=stdout, stderr=io.StringIO(), environ={})
            status = raw_main([arg.format(value) for arg in argv], env)
        said = env.stderr.getvalue()
        assert status == 255 and said.count("\n") == 1, (argv, status, said)
        assert option in said and value.lower()[:3] in said.lower(), (argv, said)
