"""Start-up stays lean: what each command imports, and how hosts are connected.

`anet --version` and a run on this machine alone must not load asyncssh (crypto, 0.1 s), rich
and pygments (the live view), structlog (until a line is logged) or the other subcommands:
they were 0.4 s of a 0.6 s local run. Checked on the real command, in a fresh interpreter,
with `-X importtime` (which names every module a process imports).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import anet
from anet.remote import sshlib
from anet.remote.connect import Connector, SshOptions
from anet.remote.hosts import parse_spec
from anet.remote.identity import end_machine

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("asyncssh", "cryptography", "rich", "pygments", "structlog", "yaml")
"""Packages a command that neither connects nor draws must not import."""


LIST_MODULES = """
import atexit, runpy, sys
def _write(path=sys.argv.pop(1)):
    with open(path, "w") as out:
        out.write("\\n".join(sorted(sys.modules)))
atexit.register(_write)
"""


def imported(*argv: str, cwd: Path) -> set[str]:
    """Every module a fresh `python3 ARGV...` has loaded when it exits (it must succeed).

    Read from sys.modules at exit: `-X importtime` misses what importlib.import_module loads.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ANET_NO_UVLOOP", None)
    listing = cwd / "modules.txt"
    if argv[0] == "-m":  # as `python3 -m anet ...` runs it
        run = f"runpy.run_module({argv[1]!r}, run_name='__main__', alter_sys=True)"
        code = f"{LIST_MODULES}sys.argv[0] = {argv[1]!r}\n{run}"
        argv = argv[2:]
    else:
        code, argv = LIST_MODULES + argv[1], ()
    done = subprocess.run(
        [sys.executable, "-c", code, str(listing), *argv], capture_output=True, cwd=cwd, env=env
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return set(listing.read_text().split())


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_version_imports_no_subcommand_and_nothing_heavy(tmp_path):
    modules = imported("-m", "anet", "--version", cwd=tmp_path)
    assert heavy(modules) == []
    loaded = sorted(m for m in modules if m.startswith(("anet.cli.", "anet.api", "anet.views.")))
    assert loaded == ["anet.cli.argv", "anet.cli.common", "anet.views.diagnostics"]
    assert "asyncio" not in modules  # 20 ms, for a command that runs no loop


def test_a_local_run_imports_nothing_that_connects_or_draws(tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_text("true\necho hi\n")
    argv = ["-m", "anet", "run", "-S", ":", "--no-journal", str(batch)]
    modules = imported(*argv, cwd=tmp_path)
    assert heavy(modules) == []
    others = {"anet.cli.report", "anet.cli.machines", "anet.cli.sync", "anet.cli.journals"}
    assert modules & others == set()
    assert "anet.cli.run" in modules  # the run did happen, through its module


DEPS_ONLY = ("anet.deps", "dispatcher.syncproto", "dispatcher.syncstore", "statistics")
"""What a run without deps has no use for: the deps scan and sync, the sync's messages (15 ms
of start-up), and statistics (with fractions and decimal, for one median)."""


def test_a_run_without_deps_imports_no_deps_sync(tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_text("true\n")
    modules = imported("-m", "anet", "run", "-S", ":", "--no-journal", str(batch), cwd=tmp_path)
    assert "anet.api" in modules
    assert sorted(m for m in modules if m.startswith(DEPS_ONLY)) == []


def test_a_run_with_deps_does_import_them(tmp_path):
    """The guard above can fail: the same run with a deps folder loads the deps sync."""
    (tmp_path / "deps").mkdir()
    (tmp_path / "deps" / "input.txt").write_text("x\n")
    batch = tmp_path / "batch.txt"
    batch.write_text("cat input.txt\n")
    argv = ["run", "-S", ":", "--no-journal", str(batch), f"{tmp_path / 'deps'}/"]
    modules = imported("-m", "anet", *argv, cwd=tmp_path)
    assert {"anet.deps.sync", "anet.deps.manifest", "dispatcher.syncproto"} <= modules


def test_the_check_sees_a_heavy_import(tmp_path):
    """The guard can fail: loading asyncssh the one way anet does shows up in the list."""
    modules = imported("-c", "from anet.remote.sshlib import asyncssh; asyncssh()", cwd=tmp_path)
    assert "asyncssh" in heavy(modules)


@pytest.mark.parametrize("name", anet.__all__)
def test_every_public_name_is_there_when_asked_for(name):
    """`anet`'s names load on first use: each must still be found, and be what it was."""
    value = getattr(anet, name)
    assert value is not None
    if isinstance(value, type) or callable(value):
        assert getattr(value, "__name__", name) == name
    assert name in dir(anet)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        anet.no_such_thing  # noqa: B018


# -- the ssh config, tokenised once per run ---------------------------------------------------

CONFIG = """\
# a comment, then a blank line

Host "node1" alias
    HostName 10.0.0.1
    Port=2201
    IdentityFile ~/.ssh/id_%h_%r
Host node*
    User bob
    Port 2299
    ProxyCommand ssh -W %h:%p "gate way"
Match host node7
    Compression yes
Include {include}
Host *
    User = alice
    ServerAliveInterval 7
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    included = tmp_path / "included"
    included.write_text("Host alias\n    Port 2244\n    ForwardAgent yes\n")
    path = tmp_path / "config"
    path.write_text(CONFIG.format(include=included))
    return path


def _options(config_class, paths, host):
    loaded = config_class.load(None, paths, False, False, False, "me", (), host, ())
    return dict(loaded._options)


@pytest.mark.parametrize("host", ["node1", "node7", "alias", "other", "NODE1"])
def test_a_config_parses_as_asyncssh_parses_it(config, host):
    """The parse that tokenises each file once gives asyncssh's own options, host by host
    (Host and Match blocks, `=` forms, quoting, ProxyCommand kept whole, Include, %-tokens),
    the first time and from its remembered lines."""
    asyncssh = sshlib.asyncssh()
    config_class = asyncssh.config.SSHClientConfig
    assert config_class.parse is sshlib._parse  # installed
    for _ in range(2):
        ours = _options(config_class, [str(config)], host)
        config_class.parse = sshlib.stock_parse
        try:
            theirs = _options(config_class, [str(config)], host)
        finally:
            config_class.parse = sshlib._parse
        assert ours == theirs


def test_a_changed_config_is_read_again_and_a_bad_line_named(config):
    asyncssh = sshlib.asyncssh()
    config_class = asyncssh.config.SSHClientConfig
    assert _options(config_class, [str(config)], "node1")["Port"] == 2201
    config.write_text(CONFIG.replace("Port=2201", "Port=2202").format(include="/nonexistent"))
    assert _options(config_class, [str(config)], "node1")["Port"] == 2202
    config.write_text('Host node1\n    User "unclosed\n')
    with pytest.raises(asyncssh.config.ConfigParseError, match="line 2: No closing quotation"):
        _options(config_class, [str(config)], "node1")


def test_the_identity_of_hosts_comes_from_the_same_config(config):
    paths = [str(config)]
    first, other = (end_machine(parse_spec(name), paths) for name in ("node1", "node7"))
    assert (first.host, first.port, first.user) == ("10.0.0.1", 2201, "bob")
    assert (other.host, other.port, other.user) == ("node7", 2299, "bob")
    assert "gate way" in other.via  # ProxyCommand: reached, and named, from there


# -- handshakes limited per sshd, not in all ---------------------------------------------------


def test_handshakes_wait_only_for_those_to_the_same_sshd():
    """sshd's MaxStartups is per sshd: a host must not wait for another machine's handshakes
    (a global cap of 8 made 64 hosts connect in eight rounds), but one sshd gets at most
    `max_handshakes` at once, also when several specs (aliases) lead to it."""

    async def main() -> tuple[int, int, int]:
        connector = Connector(SshOptions(max_handshakes=2))
        one = SimpleNamespace(host="10.0.0.1", port=22)
        alias = SimpleNamespace(host="10.0.0.1", port=22)
        other_port = SimpleNamespace(host="10.0.0.1", port=2222)
        held = asyncio.Event()
        inside: dict[str, int] = {}

        async def handshake(name: str, options: SimpleNamespace, via: str = "") -> None:
            async with connector._handshake(via, options):  # type: ignore[arg-type]
                inside[name] = inside.get(name, 0) + 1
                await held.wait()

        tasks = [asyncio.create_task(handshake("a", o)) for o in (one, alias, one, alias)]
        tasks += [asyncio.create_task(handshake(f"b{i}", other_port)) for i in range(2)]
        tasks += [asyncio.create_task(handshake("jump", one, via="gateway"))]
        for _ in range(5):
            await asyncio.sleep(0)
        counts = (inside.get("a", 0), sum(inside.get(f"b{i}", 0) for i in range(2)))
        behind_jump = inside.get("jump", 0)
        held.set()
        await asyncio.gather(*tasks)
        assert inside["a"] == 4  # the others got their turn once these were done
        return (*counts, behind_jump)

    same_sshd, other_sshd, behind_a_jump = asyncio.run(main())
    assert same_sshd == 2  # the limit of one sshd, however it was named
    assert other_sshd == 2  # another port is another sshd: not held up
    assert behind_a_jump == 1  # the same address behind a jump host is another machine


SPAWNS = """
import subprocess, sys
spawned = []
real_init = subprocess.Popen.__init__
def counting(self, args, *rest, **kw):
    spawned.append(args)
    real_init(self, args, *rest, **kw)
subprocess.Popen.__init__ = counting
from anet.remote import sshlib
sshlib.asyncssh()
print(repr(spawned))
"""


def test_importing_asyncssh_starts_no_process():
    """asyncssh looks for liboqs at import; ctypes' find_library would run `ldconfig -p`, then
    gcc and ld to link a test program, for each of two names: 0.13-0.23 s of the import."""
    out = subprocess.run(
        [sys.executable, "-c", SPAWNS], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("name", ["c", "z", "ssl", "oqs", "liboqs", "no-such-library"])
def test_the_quick_library_lookup_agrees_with_ctypes(name):
    import ctypes.util

    assert sshlib.find_library_quickly(name) == ctypes.util.find_library(name)
