"""A host's cache of dispatcher payloads: the zips of unused versions go, none in use does.

The real stub boots the real payload from a cache folder that also holds other versions'
zips (their content does not matter: only their names, ages and locks), and exits at its
stdin's EOF, tidying as it goes."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from anet.remote.bootstrap import payload
from dispatcher.cachetidy import KEEP_DAYS, TEMP_AGE
from dispatcher.protocol import BOOT_MARK

DAY = 86400


def aged(path: Path, seconds: float) -> Path:
    path.write_bytes(b"a zip of another anet version\n")
    when = time.time() - seconds
    os.utime(path, (when, when))
    return path


def boot(home: Path) -> None:
    """One dispatcher of this anet, from its zip in `home`, to its exit."""
    shipped = payload()
    own = home / f"dispatcher-{shipped.digest}.zip"
    if not own.exists():
        own.write_bytes(shipped.data)
    env = {**os.environ, "ANET_HOME": str(home)}
    command = shipped.shell_command(sys.executable)
    done = subprocess.run(["sh", "-c", command], input=b"", capture_output=True, env=env,
                          timeout=60)  # fmt: skip
    assert BOOT_MARK in done.stdout, done.stderr


def test_zips_no_boot_used_for_a_month_go_and_the_others_stay(tmp_path: Path) -> None:
    home = tmp_path / "cache"
    home.mkdir(mode=0o700)
    old = aged(home / f"dispatcher-{'a' * 64}.zip", (KEEP_DAYS + 1) * DAY)
    recent = aged(home / f"dispatcher-{'b' * 64}.zip", (KEEP_DAYS - 1) * DAY)
    torn = aged(home / f"dispatcher-{'c' * 64}.zip.4242.tmp", TEMP_AGE + 60)
    downloading = aged(home / f"dispatcher-{'d' * 64}.zip.4343.tmp", 5)
    other = aged(home / "manifests-of-something-else", (KEEP_DAYS + 1) * DAY)
    own = home / f"dispatcher-{payload().digest}.zip"
    own.write_bytes(payload().data)
    os.utime(own, (1.0, 1.0))  # never used since 1970: its own boot marks it used
    boot(home)
    assert not old.exists() and not torn.exists()
    assert recent.exists() and downloading.exists() and other.exists()
    assert own.exists() and time.time() - own.stat().st_mtime < DAY


def test_a_zip_a_running_dispatcher_holds_stays_however_old(tmp_path: Path) -> None:
    """A dispatcher kept by a pool for weeks loads its deps modules from its zip later."""
    home = tmp_path / "cache"
    home.mkdir(mode=0o700)
    held = aged(home / f"dispatcher-{'e' * 64}.zip", (KEEP_DAYS + 9) * DAY)
    with open(held, "rb") as running:
        fcntl.flock(running, fcntl.LOCK_SH)  # as its dispatcher holds it
        boot(home)
        assert held.exists()
    boot(home)  # no one holds it now
    assert not held.exists()
