"""Whether a person is at this machine now: its local sessions in utmp, and their idle time.

`--yield` suspends anet's jobs while someone works at the machine (the original ANet ran on a
department's desktops while students sat at them). A person is *at* the machine when utmp has a
live local session (a login on a console or a terminal of the machine itself: no remote host)
whose terminal saw input within `idle` seconds. The idle time is the one `w` shows: now minus
the last access time of the session's terminal device, which the kernel updates on input. An X
session counts through the virtual terminal it runs on; a session whose terminal cannot be read
(an X display `:0` with no tty) counts as away: it would otherwise hold a machine for ever.

`ANET_UTMP` in the dispatcher's environment names another utmp file, whose terminals are then
found beside it rather than in /dev: for tests, which cannot log a person in.

Runs on the end machines: Python 3.8+, stdlib only.
"""

from __future__ import annotations

import os
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Iterator, List, Tuple

UTMP = "/var/run/utmp"
USER_PROCESS = 7
RECORD = struct.Struct("=hxxi32s4s32s256shhiii4i20s")
"""Linux glibc's `struct utmp` (384 bytes on x86-64, aarch64 and the other 64-bit ABIs)."""


def sessions(path: str) -> Iterator[Tuple[str, str, str, int]]:
    """(line, user, host, pid) of each user session recorded in the utmp file at `path`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return
    for at in range(0, len(data) - RECORD.size + 1, RECORD.size):
        fields = RECORD.unpack_from(data, at)
        if fields[0] != USER_PROCESS:
            continue
        line, user, host = (_text(raw) for raw in (fields[2], fields[4], fields[5]))
        yield line, user, host, fields[1]


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's: alive
    return True


def person_at(idle: float, now: float) -> str:
    """Who works at this machine now ("alice on tty2, idle 4s"), or "" when nobody does.

    `now` is Unix time, as the terminals' access times are."""
    path = os.environ.get("ANET_UTMP") or UTMP
    dev = os.path.dirname(path) if os.environ.get("ANET_UTMP") else "/dev"
    active: List[Tuple[float, str]] = []
    for line, user, host, pid in sessions(path):
        if (host and not host.startswith(":")) or not line or line.startswith(":"):
            continue  # a remote login, or an X display with no terminal to time
        if pid > 0 and not _alive(pid):
            continue  # a stale record: the session ended without its logout being written
        try:
            quiet = max(0.0, now - os.stat(os.path.join(dev, line)).st_atime)
        except OSError:
            continue
        if quiet < idle:
            active.append((quiet, "%s on %s, idle %ds" % (user, line, quiet)))
    return min(active)[1] if active else ""
