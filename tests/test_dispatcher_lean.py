"""The dispatcher's start-up stays lean: a run loads the modules of a run, no more.

Its deps sync, per-job file and process listing modules (with shutil, hashlib's users and
the sync's message classes) are a third of its import CPU, paid by every host at every start;
they load with the first frame of theirs (`protocol.load_on_demand`). Seen from outside, as a
master would: a real dispatcher process, `-X importtime` naming every module it imports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_dispatcher import DispatcherProcess

from anet.remote.bootstrap import PYTHON_FLAGS, payload
from dispatcher.pins import Pin, Unpin, Within
from dispatcher.procs import FindProcs, ProcsFound
from dispatcher.protocol import (
    _BY_CODE,
    BOOT_FRAMES,
    BOOT_MARK,
    Bye,
    Exit,
    FrameDecoder,
    Hello,
    Message,
    Output,
    RemoteProtocolError,
    Role,
    Run,
    Shutdown,
    decode_body,
    encode,
    load_on_demand,
)
from dispatcher.syncproto import SyncOffer, SyncState

LATE = ("dispatcher.syncstore", "dispatcher.syncproto", "dispatcher.procs", "shutil", "socket")
"""Modules a run without deps, per-job files or housekeeping must not import."""
NOT_AT_BOOT = ("base64", "re", "typing", "hashlib", "_hashlib", "subprocess", "locale")
"""What a boot (the stub, its hash check, the dispatcher's imports, up to its Hello) does not
import: base64, typing and subprocess's locale each bring re (3.11), hashlib OpenSSL;
together 45 M instructions, a third of a boot (callgrind). subprocess comes with the first
job."""
CLASS_BUILDING = ("dataclasses", "inspect", "ast", "dis", "tokenize")
"""dataclasses and what it imports: with the code it compiled for each message class, 57% of
a dispatcher's boot (dispatcher/record.py builds the classes instead)."""


def imported(stderr: Path) -> set[str]:
    """Module names from `-X importtime` lines (`import time: self | cumulative | name`), from
    after `site` on: what this machine's .pth files load is not the dispatcher's doing."""
    names = [
        line.rsplit("|", 1)[1].strip()
        for line in stderr.read_text().splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    return set(names[names.index("site") + 1 :] if "site" in names else names)


def session(
    tmp_path: Path, *requests: Message, until: Callable[[Message], bool] | None = None
) -> tuple[list[Message], set[str]]:
    """One job, then `requests` (each waiting for its reply; all at once and then `until` a
    message if given), then Shutdown: what the dispatcher said, what it imported."""
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        d = DispatcherProcess(tmp_path / "home", 1, flags=("-X", "importtime"), stderr=stderr)
        try:
            d.send(Run(1, 0, b"true"))
            said = d.read_until(lambda m: isinstance(m, Exit) and m.aid == 1)
            if until is not None:
                d.send(*requests)
                said += d.read_until(until)
            for request in requests if until is None else ():
                d.send(request)
                said += d.read_until(lambda m: not isinstance(m, Exit))
            d.send(Shutdown())
            said += d.read_until(lambda m: isinstance(m, Bye))
            assert d.proc.wait(30) == 0
        finally:
            d.close()
    return said, imported(log)


def boot(home: Path, given: bytes) -> tuple[list[Message], set[str]]:
    """The stub of a real payload, as a host runs it, `given` on its stdin and then EOF (it
    stops after its Hello): what it said, what it imported."""
    command = [sys.executable, "-X", "importtime", *PYTHON_FLAGS, "-c", payload().code]
    done = subprocess.run(
        command, input=given, capture_output=True, timeout=60,
        env={**os.environ, "ANET_HOME": str(home)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert BOOT_MARK + BOOT_FRAMES in done.stdout, done.stdout
    frames = done.stdout.split(BOOT_MARK + BOOT_FRAMES, 1)[1]
    log = home / "importtime.txt"
    log.write_bytes(done.stderr)
    return FrameDecoder().feed(frames), imported(log)


def test_a_boot_imports_neither_base64_nor_typing_nor_hashlib_nor_subprocess(tmp_path):
    data = payload().data
    for given in (b"%d\n" % len(data) + data, b""):  # the payload sent, then from the cache
        said, modules = boot(tmp_path, given)
        assert isinstance(said[0], Hello)
        assert sorted(modules & set(NOT_AT_BOOT)) == []


def test_a_run_without_deps_imports_no_sync_store_nor_process_listing(tmp_path):
    said, modules = session(tmp_path)
    assert [m.code for m in said if isinstance(m, Exit)] == [0]
    assert "dispatcher.runner" in modules  # the listing is read: the job's module is there
    assert sorted(modules & set(LATE)) == []


def test_a_dispatcher_builds_its_classes_without_dataclasses(tmp_path):
    said, modules = session(tmp_path)
    assert [m.code for m in said if isinstance(m, Exit)] == [0]
    assert sorted(modules & set(CLASS_BUILDING)) == []


def test_the_first_sync_frame_loads_the_sync_store_alone_and_is_answered(tmp_path):
    said, modules = session(tmp_path, SyncOffer(7, b"\0" * 32, 0, 0))
    (state,) = [m for m in said if isinstance(m, SyncState)]
    assert state.rid == 7 and not state.ready
    assert "dispatcher.syncstore" in modules
    assert "dispatcher.procs" not in modules


def test_the_first_listing_frame_loads_the_process_listing_and_is_answered(tmp_path):
    said, modules = session(tmp_path, FindProcs(8, "no-such-process-[x]", "elsewhere", 1, 5.0))
    (found,) = [m for m in said if isinstance(m, ProcsFound)]
    assert (found.rid, found.procs, found.error) == (8, [], "")
    assert "dispatcher.procs" in modules


def test_a_runs_own_tree_before_any_sync_frame_loads_the_store_first(tmp_path):
    """Pin, Unpin and Within are known from the start (a pool's runs send them, maybe with no
    sync in this session): the store they speak to is loaded for them, and a Run bound to a
    tree not held here fails as it should, not the dispatcher."""
    tree = b"\1" * 32
    frames = (Pin(tree), Within(tree), Run(2, 1, b"true"), Unpin(tree))
    said, modules = session(tmp_path, *frames, until=lambda m: isinstance(m, Exit) and m.aid == 2)
    assert "dispatcher.syncstore" in modules
    (bound,) = [m for m in said if isinstance(m, Exit) and m.aid == 2]
    assert bound.code == 127
    refused = b"".join(m.data for m in said if isinstance(m, Output) and m.aid == 2)
    assert b"deps tree is not held on this host" in refused


def test_a_code_no_loader_registers_is_still_refused(monkeypatch):
    """The loaders run once each; a code that none of them brings stays unknown."""
    calls: list[str] = []
    monkeypatch.setattr("dispatcher.protocol._LOADERS", [])
    load_on_demand(lambda: calls.append("loaded"))
    body = encode(Shutdown())[4:]
    unknown = bytes([body[0], 0x7F]) + body[2:]  # [127], a code nothing uses
    assert 127 not in _BY_CODE
    for _ in range(2):
        with pytest.raises(RemoteProtocolError, match="unknown message code 127"):
            decode_body(unknown, Role.MASTER)
    assert calls == ["loaded"]
