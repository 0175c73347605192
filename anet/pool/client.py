"""The commands' side of a pool: one request per connection (server.py says which).

The pool may be on another machine (`--via user@gateway`): the connection is then an SSH
channel to its socket there (a forwarded unix socket, as `ssh -L` makes one), so the client is
authenticated as any SSH user is, and the pool sees its own uid as the peer (sshd connects as
the user who logged in).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.engine import RunPolicy
from ..core.halt import HaltPolicy
from ..core.record import JobResult
from ..errors import AnetError, HostError
from ..remote.connect import Connector, SshOptions
from ..remote.hosts import parse_spec
from ..remote.sshlib import channel_errors
from . import wire
from .place import DEFAULT_NAME, Place, place, run_dir_for


class PoolDown(AnetError):
    """No pool answers at this place."""


class PoolError(AnetError):
    """The pool answered with an error: the user's mistake (no such run, a bad batch)."""


@dataclass(frozen=True, slots=True)
class Via:
    """A pool on another machine, reached over SSH as a host is (`ssh` options, known_hosts)."""

    destination: str
    ssh: SshOptions


Target = tuple[Place, "Via | None"]
"""Which pool: its place (by name) here, or the pool of that name on `Via`'s machine."""

_WHERE = 'printf "%s\\n%s\\n" "${XDG_RUNTIME_DIR-}" "$(id -u)"'
"""Asked of the pool's machine: where its user's pool sockets are (place.run_dir_for)."""


@contextlib.asynccontextmanager
async def _connection(target: Target) -> AsyncIterator[tuple[Any, Any]]:
    place, via = target
    if via is not None:
        async with _remote(place.name, via) as streams:
            yield streams
        return
    try:
        reader, writer = await asyncio.open_unix_connection(str(place.socket))
    except (FileNotFoundError, ConnectionRefusedError):
        raise PoolDown(f"no pool {place.name!r} is up (`anet up` starts one)") from None
    except OSError as exc:
        raise PoolDown(f"cannot reach pool {place.name!r}: {exc.strerror}") from None
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def _remote(name: str, via: Via) -> AsyncIterator[tuple[Any, Any]]:
    """A channel to the pool's socket on `via`'s machine, where place.py's rule puts it for
    the user logged in there (their $XDG_RUNTIME_DIR and uid, asked first)."""
    connector = Connector(via.ssh)
    try:
        try:
            conn = await connector.connect(parse_spec(via.destination))
            asked = await conn.run(_WHERE, check=True, encoding="utf-8", errors="replace")
            runtime, uid = [*str(asked.stdout).splitlines(), "", ""][:2]
            path = run_dir_for(runtime, int(uid)) / f"{name}.sock"
        except (HostError, ValueError, *channel_errors()) as exc:
            reason = exc.reason if isinstance(exc, HostError) else str(exc) or type(exc).__name__
            raise PoolDown(f"cannot reach {via.destination}: {reason}") from None
        try:
            reader, writer = await conn.open_unix_connection(str(path))
        except channel_errors():
            raise PoolDown(f"no pool {name!r} is up on {via.destination}") from None
        try:
            yield reader, writer
        finally:
            writer.close()
    finally:
        await connector.close()


def _checked(reply: Any, place: Place) -> dict[str, Any]:
    if reply is None:
        raise PoolDown(f"pool {place.name!r} closed the connection without an answer")
    if not isinstance(reply, dict):
        raise wire.WireError(f"pool {place.name!r} answered with a {type(reply).__name__}")
    if "error" in reply:
        raise PoolError(str(reply["error"]))
    return reply


async def request(target: Target, message: dict[str, Any]) -> dict[str, Any]:
    """One request, its one reply (a `wait` may take as long as its run)."""
    async with _connection(target) as (reader, writer):
        writer.write(wire.pack(message))
        await writer.drain()
        return _checked(await wire.read(reader), target[0])


async def attach(
    target: Target, run_id: int, *, summary: bool = False
) -> AsyncIterator[JobResult | dict[str, Any]]:
    """The run's results from its start, each once, then its row (a dict) when it has ended;
    with `summary`, the row has the run's numbers by host (server.py's PoolRun.summary)."""
    async with _connection(target) as (reader, writer):
        writer.write(wire.pack({"op": "attach", "run": run_id, "summary": summary}))
        await writer.drain()
        while True:
            item = await wire.read(reader)
            if isinstance(item, list):
                yield await wire.read_result(reader, item)
            else:
                yield _checked(item, target[0])
                return


async def is_up(place: Place) -> int | None:
    """The pool's pid when one answers here; None when none does (a socket file left by a
    pool that died answers nothing: it is stale)."""
    try:
        async with asyncio.timeout(5):
            reply = await request((place, None), {"op": "ping"})
    except (PoolDown, TimeoutError, wire.WireError):
        return None
    return int(reply["pid"])


def deps_path(argument: str) -> str:
    """A deps folder as the pool reads it: an absolute path on this machine (the pool runs as
    this user here), its trailing slash kept (rsync's rule: the folder's contents)."""
    return os.path.join(os.getcwd(), argument)


def pool_options(
    policy: RunPolicy, halt: HaltPolicy, keep_order: bool, priority: int = 1
) -> dict[str, Any]:
    """A run's options as a submit carries them (run.py's `run_options` reads them); `caps`
    are --max-output's and the output format's (engine.OutputCap)."""
    caps = [[cap.size, cap.why, cap.stdout_only] for cap in policy.caps]
    return {
        "retries": policy.retries, "timeout": policy.timeout, "speculate": policy.speculate,
        "halt": halt.text, "keep_order": keep_order, "priority": priority, "caps": caps,
    }  # fmt: skip


class Pool:
    """A running pool from Python, with a `Cluster`'s `run`:

        async with anet.Pool() as pool:                    # the pool `anet up` started
            async for result in pool.run(["echo 1", "echo 2"]):
                print(result.id, result.stdout)

    Each `run` is a run of the pool's (`anet ls` lists it): its results come from the start,
    each job once; leaving the loop early cancels it (its running jobs are killed), as
    leaving a `Cluster.run` does. `via` reaches a pool on another machine over SSH.
    """

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        *,
        via: str | None = None,
        ssh: SshOptions | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        remote = Via(via, ssh or SshOptions()) if via is not None else None
        self._target: Target = (place(name, os.environ if environ is None else environ), remote)
        self.pid: int | None = None
        self.last_row: dict[str, Any] = {}

    async def __aenter__(self) -> Pool:
        """PoolDown (one line) when no pool answers."""
        self.pid = int((await request(self._target, {"op": "ping"}))["pid"])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass  # nothing is held open between requests

    async def run(
        self,
        commands: Iterable[str | bytes],
        *,
        name: str = "python",
        policy: RunPolicy | None = None,
        halt: HaltPolicy | None = None,
        keep_order: bool = False,
        deps: str | os.PathLike[str] | None = None,
    ) -> AsyncIterator[JobResult]:
        """Run every command once (job id = position); yield each final result as it ends.
        `policy`, `halt` and `keep_order` are `anet run`'s --retries/--timeout/--no-speculate,
        --halt and -k; `deps` is its DEPS folder, synced for this run alone and read by the
        pool (a path on the pool's machine: relative ones are taken from this process's
        folder). The run's end state is in `last_row` afterwards (`done`, `cancelled`,
        `failed: ...`)."""
        encoded = [c.encode() if isinstance(c, str) else bytes(c) for c in commands]
        options = pool_options(policy or RunPolicy(), halt or HaltPolicy(), keep_order)
        if deps is not None:
            options["deps"] = deps_path(os.fspath(deps))
        message = {"op": "submit", "commands": encoded, "name": name, "options": options}
        row = await request(self._target, message)
        finished = False
        try:
            async for item in attach(self._target, row["id"]):
                if isinstance(item, dict):
                    self.last_row = item
                    finished = True
                else:
                    yield item
        finally:
            if not finished:  # left early: the run's jobs must not outlive the loop
                with contextlib.suppress(AnetError, OSError):
                    await asyncio.shield(request(self._target, {"op": "cancel", "run": row["id"]}))

    async def runs(self) -> list[dict[str, Any]]:
        """The pool's runs, as `anet ls` shows them."""
        return list((await request(self._target, {"op": "ls"}))["runs"])
