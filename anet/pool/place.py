"""Where a pool lives: a private directory holding its socket and pid file, and its log.

The socket's directory is the first guard (0700, owned by the user: nobody else can even reach
the socket); the server's peer check (SO_PEERCRED) is the second. The directory is
`$XDG_RUNTIME_DIR/anet` when the session has one (a tmpfs that the login manager empties at
logout), else `/tmp/anet-<uid>`, the way tmux and ssh's ControlPath keep theirs; a directory
found there that is not the user's own, or open to others, is refused, never used.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..streams.journal import journals_dir

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DEFAULT_NAME = "default"


@dataclass(frozen=True, slots=True)
class Place:
    """One pool's files, by its name."""

    name: str
    run_dir: Path  # private: the socket and the pid file
    state_dir: Path  # private: the log and the runs' journals

    @property
    def socket(self) -> Path:
        return self.run_dir / f"{self.name}.sock"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.state_dir / "pool.log"

    @property
    def runs_dir(self) -> Path:
        """Each run's journal and the files kept beside it (server.py's PoolRun)."""
        return self.state_dir / "runs"

    @property
    def hosts_file(self) -> Path:
        """The hosts `anet pool add` and `drain` changed (hostset.py)."""
        return self.state_dir / "hosts.json"

    def journal(self, run_id: int) -> Path:
        return self.runs_dir / f"{run_id}.sqlite"


def check_name(name: str) -> str:
    """UsageError for a pool name that is not a plain word (it names files)."""
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise UsageError(f"bad pool name {name!r}: letters, digits, '_', '.' and '-' only")
    return name


def place(name: str, environ: Mapping[str, str]) -> Place:
    """The pool called `name` on this machine."""
    check_name(name)
    run_dir = run_dir_for(environ.get("XDG_RUNTIME_DIR", ""), os.getuid())
    state_dir = journals_dir(environ).parent / "pools" / name
    return Place(name, run_dir, state_dir)


def run_dir_for(runtime: str, uid: int) -> Path:
    """Where a user's pool sockets are, from their $XDG_RUNTIME_DIR (maybe unset) and uid: the
    one rule for this machine and, through `--via`, another one."""
    return Path(runtime, "anet") if os.path.isabs(runtime) else Path(f"/tmp/anet-{uid}")


def make_private(directory: Path) -> None:
    """Create `directory` (and its parents) 0700 if missing, then check it is the user's own
    and closed to everyone else: a directory someone else made first is an attack, not a home."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise UsageError(f"{directory} is not a directory of yours: refusing to use it")
    if info.st_mode & 0o077:
        raise UsageError(f"{directory} is open to other users (mode {info.st_mode & 0o777:o})")
