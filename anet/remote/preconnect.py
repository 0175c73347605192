"""TCP connections to the early hosts' sshd, opened before asyncssh is imported.

sshd forks (and re-execs itself) for each connection and sends its banner without waiting for
the client: the TCP handshake, that fork and the banner need nothing of the master but a
socket. Importing asyncssh takes the master some 80 ms; `start`, called by `anet`'s entry
point before that import, connects to each early host's sshd from a thread of its own, so
that all of it happens meanwhile. `Connector.connect` then hands the connected socket to
asyncssh (`take`) in place of connecting itself: the handshake, known_hosts check included,
is the one it would have made, under the host's name.

The address comes from the ssh config's Host blocks (`sshlib.direct_address`), read before
asyncssh is loaded: a guess, which the Connector checks against asyncssh's own reading of the
config (the socket is taken only for the same host and port, with no jump host or proxy).
A connection that failed is not taken either: the Connector connects the usual way, and meets
the failure in its own words. Sockets no one took are closed as the run ends (`close_untaken`).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from .hosts import HostSpec
from .sshlib import direct_address

Address = tuple[str, int]

CONNECT_TIMEOUT = 20.0
"""Seconds a connection made here may take: the Connector's own default."""


@dataclass(slots=True)
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    sock: socket.socket | None = None
    error: OSError | None = None
    abandoned: bool = False


_pending: dict[Address, _Pending] = {}
_lock = threading.Lock()


def start(specs: Sequence[HostSpec], config_paths: Sequence[str]) -> None:
    """Connect to the sshd of each of `specs` whose address the ssh config tells without
    asyncssh (one connection per address and port), each from a daemon thread."""
    for spec in specs:
        address = None if spec.local else direct_address(spec.host, spec.port, config_paths)
        if address is None or address in _pending:
            continue
        pending = _pending[address] = _Pending()
        thread = threading.Thread(
            target=_connect, args=(pending, address), name="anet-preconnect", daemon=True
        )
        thread.start()


def _connect(pending: _Pending, address: Address) -> None:
    try:
        sock = socket.create_connection(address, CONNECT_TIMEOUT)
    except OSError as exc:
        pending.error = exc
    else:
        with _lock:
            if pending.abandoned:  # closed while connecting: no one will take it
                sock.close()
            else:
                pending.sock = sock
    finally:
        pending.done.set()


async def take(host: str, port: int) -> socket.socket | None:
    """The socket connected to `host`, `port` (as asyncssh resolved the config), once, when it
    connected; None otherwise (none was started, or it failed: connect the usual way). A
    connection still under way is waited for: it was begun before any other could be."""
    pending = _pending.pop((host, port), None)
    if pending is None:
        return None
    if not pending.done.is_set():
        import asyncio  # here: `start` runs before asyncio is imported, and needs none of it

        await asyncio.get_running_loop().run_in_executor(None, pending.done.wait)
    if isinstance(pending.error, TimeoutError):  # the usual way would only wait as long again
        raise pending.error
    return pending.sock


def close_untaken() -> None:
    """Close every socket no Connector took; one still connecting is closed when it connects."""
    with _lock:
        pendings = list(_pending.values())
        _pending.clear()
        for pending in pendings:
            pending.abandoned = True
            if pending.sock is not None:
                pending.sock.close()
                pending.sock = None
