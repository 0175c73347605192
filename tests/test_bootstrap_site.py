"""The dispatcher's start and end stay lean.

It starts without the host's `site`: its .pth files and sitecustomize cost every boot tens of
milliseconds (33 ms of CPU for `python3 -c pass` on the test machine, an editable install's
finder and certifi among them) and can do nothing for it: it needs only the stdlib and the
msgpack it carries in its payload. It ends without the interpreter's teardown, which the
master would wait for."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from anet.remote.bootstrap import payload
from anet.remote.transport import LocalTransport
from dispatcher.protocol import BOOT_MARK


@pytest.fixture
def site_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A sitecustomize on PYTHONPATH that leaves a file behind whenever `site` runs it."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    marker = tmp_path / "site-ran"
    (hooks / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.setenv("PYTHONPATH", str(hooks))
    return marker


def test_the_stub_sent_to_a_host_skips_site(site_hook: Path) -> None:
    command = payload().shell_command(sys.executable)
    # stdin closes at once: the dispatcher says its boot mark and Hello, then exits on the EOF
    out = subprocess.run(["sh", "-c", command], input=b"", capture_output=True, timeout=60)
    assert BOOT_MARK in out.stdout, out.stderr
    assert not site_hook.exists()


def test_the_local_dispatcher_skips_site(site_hook: Path) -> None:
    async def boot() -> bytes:
        channel = await LocalTransport().start(payload())
        channel.close()  # EOF: it exits once booted
        seen = b""
        while chunk := await channel.stdout.read(1 << 16):
            seen += chunk
        await channel.wait()
        return seen

    assert BOOT_MARK in asyncio.run(boot())
    assert not site_hook.exists()


EXITS_AT_ONCE = """
import atexit, sys
atexit.register(lambda: open(sys.argv[1], "w").close())
from dispatcher.__main__ import main
main(sys.argv[2])
"""


def test_the_dispatcher_ends_without_the_interpreters_teardown(tmp_path: Path) -> None:
    """Once it said Bye, nothing is left to do: the teardown (freeing its modules, 12 ms of
    CPU here) would only make its master wait longer for it to exit."""
    marker = tmp_path / "teardown-ran"
    root = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", EXITS_AT_ONCE, str(marker), str(tmp_path / "home")],
        input=b"", capture_output=True, timeout=60, cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert BOOT_MARK in done.stdout  # it booted, said Hello, read the EOF and stopped
    assert not marker.exists()
