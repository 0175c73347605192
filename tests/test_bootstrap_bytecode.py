"""The dispatcher payload carries bytecode: a host with the master's Python starts without
compiling (Python caches no bytecode for a zip), and any other Python still runs the source."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from anet.remote import bootstrap
from anet.remote.bootstrap import build_payload, build_zip, payload


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


def test_the_bytecode_is_stored_as_it_is_and_the_sources_deflated():
    """A host inflates every module it imports at every start (42 of them: 11% of the
    instructions of a dispatcher's imports); the sources are read only by another Python."""
    built = zipfile.ZipFile(io.BytesIO(payload().data))
    kinds = {info.filename.rsplit(".", 1)[1]: info.compress_type for info in built.infolist()}
    assert kinds == {"pyc": zipfile.ZIP_STORED, "py": zipfile.ZIP_DEFLATED}


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


# -- the payload, built once and then read from the master's cache ---------------------------


def test_the_payload_is_read_from_the_cache_once_built(tmp_path, monkeypatch):
    first = build_payload(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f"payload-{_key()}-{first.digest}.zip"]

    def no_build(files):
        raise AssertionError("built again: the cache was not used")

    monkeypatch.setattr(bootstrap, "build_zip", no_build)
    again = build_payload(tmp_path)
    assert again == first


def test_a_damaged_cached_payload_is_built_again_never_shipped(tmp_path):
    first = build_payload(tmp_path)
    (cached,) = tmp_path.iterdir()
    cached.write_bytes(first.data[:-10] + b"x" * 10)  # a torn or damaged file
    again = build_payload(tmp_path)
    assert again == first
    assert cached.read_bytes() == first.data


def test_a_cache_that_cannot_be_written_only_costs_the_build(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    assert build_payload(blocked / "anet") == build_payload(None)


def test_payloads_of_other_sources_go_once_a_day_old(tmp_path):
    old, recent = tmp_path / "payload-old-1.zip", tmp_path / "payload-recent-2.zip"
    old.write_bytes(b"old")
    recent.write_bytes(b"recent")
    os.utime(old, (time.time() - bootstrap.PAYLOAD_KEEP - 60,) * 2)
    kept = build_payload(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([recent.name, f"payload-{_key()}-{kept.digest}.zip"])


def _key() -> str:
    return bootstrap._sources_key(bootstrap._package_files())
