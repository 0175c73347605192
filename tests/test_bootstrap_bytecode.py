"""The dispatcher payload carries bytecode: a host with the master's Python starts without
compiling (Python caches no bytecode for a zip), and any other Python still runs the source."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

from anet.remote.bootstrap import build_zip, payload


def imported_from(zip_path: Path, module: str) -> str:
    """`module.__file__` as a fresh interpreter imports it from the zip."""
    code = f"import sys; sys.path.insert(0, {str(zip_path)!r}); import {module} as m"
    code += "; print(m.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_dispatcher_loads_from_bytecode_on_the_masters_python(tmp_path):
    zip_path = tmp_path / "payload.zip"
    zip_path.write_bytes(payload().data)
    for module in ("dispatcher.__main__", "dispatcher.syncstore", "msgpack.fallback"):
        assert imported_from(zip_path, module).endswith(".pyc"), module


def test_bytecode_of_another_python_is_skipped_for_the_source(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("VALUE = 42\n")
    built = zipfile.ZipFile(io.BytesIO(build_zip([("probe.py", source)])))
    pyc = built.read("probe.pyc")
    zip_path = tmp_path / "other.zip"
    with zipfile.ZipFile(zip_path, "w") as other:  # the magic of some other Python version
        other.writestr("probe.py", built.read("probe.py"))
        other.writestr("probe.pyc", b"\x00\x00\r\n" + pyc[4:])
    assert imported_from(zip_path, "probe").endswith("probe.py")
