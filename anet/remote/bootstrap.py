"""Ship the dispatcher to an end machine that has nothing but `python3`.

The payload is a zip of the `dispatcher` package plus the pure-Python modules of the msgpack the
master has installed (read from its installed location at run time, never copied into this
repository). Python imports straight from a zip on `sys.path`, so the cache on the end machine is
one file, named by the payload's BLAKE2b-256 (`payload_digest`), in a 0700 directory: a second
run sends only the stub. The stub checks the cached file against that hash on every start
(about 1 ms for the 580 KB zip) and asks for a fresh copy when it does not match: a job may
write anywhere the user can, and a damaged cache must not break the host for good.

The stub is one line of `python3 -c`, hex of zlib of the code below, so that no shell (sh,
bash, zsh, fish, csh) mangles it: hex digits need no quoting anywhere, and `bytes.fromhex`
imports nothing (base64 did: `re` with it, a fifth of a boot). It writes a boot mark before
anything else it says, because a login shell may already have printed banners on the same
stdout.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import marshal
import os
import shlex
import time
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import msgpack

import dispatcher
from dispatcher.protocol import BOOT_ERROR, BOOT_MARK, BOOT_NEED_PAYLOAD, STUB_MARK

MIN_PYTHON = (3, 8)
PYTHON_FLAGS = ("-S",)
"""The dispatcher's interpreter flags, on every host and locally: see `Payload.shell_command`."""
PAYLOAD_KEEP = 86400.0
"""Seconds a cached payload of other sources is kept (see `_prune`)."""

_STUB = """\
import os, sys
try:
    from _blake2 import blake2b
except ImportError:
    from hashlib import blake2b
o = sys.stdout.buffer
M = %(mark)r
def fail(msg):
    o.write(M + %(err)r + msg.encode() + b"\\n"); o.flush(); sys.exit(3)
if sys.version_info < %(min)r:
    fail("python %%d.%%d is too old: anet needs %(min_text)s or newer" %% sys.version_info[:2])
H = %(hash)r
d = os.environ.get("ANET_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "anet")
def good(p):
    try:
        with open(p, "rb") as f:
            return blake2b(f.read(), digest_size=32).hexdigest() == H
    except OSError:
        return False
try:
    os.makedirs(d, 0o700, exist_ok=True)
    os.chmod(d, 0o700)
    p = os.path.join(d, "dispatcher-" + H + ".zip")
    if not good(p):
        o.write(M + %(need)r + b"\\n"); o.flush()
        def rd(k, stop=None):
            b = b""
            while len(b) < k and (stop is None or not b.endswith(stop)):
                c = os.read(0, 1 if stop else k - len(b))
                if not c:
                    break
                b += c
            return b
        n = int(rd(24, b"\\n"))
        b = rd(n)
        if len(b) != n or blake2b(b, digest_size=32).hexdigest() != H:
            fail("dispatcher payload damaged in transit")
        t = "%%s.%%d.tmp" %% (p, os.getpid())
        with open(t, "wb") as f:
            f.write(b)
        os.replace(t, p)
except OSError as e:
    fail("cannot use %%s: %%s" %% (d, e))
sys.path.insert(0, p)
from dispatcher.__main__ import main
main(d)
"""


@dataclass(frozen=True)
class Payload:
    """The zip to ship, its hash (the cache key on the end machine), and the stub that loads it."""

    data: bytes
    digest: str
    code: str

    def shell_command(self, python: str = "python3") -> str:
        """The remote command line: fixed code and a hash, nothing from the user or the batch.

        `-S`: no `site`. The host's .pth files and sitecustomize run at every boot (33 ms of
        CPU for `python3 -c pass` on the test machine) and can do nothing for a dispatcher
        that needs only the stdlib and the msgpack in its payload."""
        return f"{shlex.quote(python)} {' '.join(PYTHON_FLAGS)} -c {shlex.quote(self.code)}"


def _package_files() -> list[tuple[str, Path]]:
    """(name in zip, file) for the dispatcher and msgpack's pure-Python modules."""
    files: list[tuple[str, Path]] = []
    for package in (dispatcher, msgpack):
        root = Path(package.__file__).parent
        files += [(f"{root.name}/{p.name}", p) for p in sorted(root.glob("*.py"))]
    return files


def build_zip(files: list[tuple[str, Path]]) -> bytes:
    """A byte-for-byte reproducible zip (fixed timestamps), so the hash is a stable cache key.

    Each module also goes in compiled by this Python, as `name.pyc` beside `name.py`:
    Python cannot cache bytecode for a zip, so a host would compile the dispatcher at every
    start (0.15 s of CPU, more than the rest of a no-op deps sync). A host whose Python has
    another bytecode magic skips the .pyc and compiles the .py, as before. The pyc is
    "unchecked-hash": the stub already checks the whole zip against its hash. The bytecode
    is stored as it is, not deflated: a host inflated every module it imported at every start
    (11% of the instructions of the dispatcher's imports, callgrind; 4% of a whole boot, the
    stub's hash of the bigger file included), for a zip that travels once per version (540 KB
    instead of 290 KB); the sources, read only by another Python, stay deflated."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in files:
            source = path.read_bytes()
            _add(archive, name, source, zipfile.ZIP_DEFLATED)
            if name.endswith(".py"):
                _add(archive, name[:-3] + ".pyc", _bytecode(source, name), zipfile.ZIP_STORED)
    return buffer.getvalue()


def _add(archive: zipfile.ZipFile, name: str, data: bytes, method: int) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = method
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def _bytecode(source: bytes, name: str) -> bytes:
    """A hash-based, unchecked .pyc (PEP 552): magic, flags 0b01, source hash, code."""
    code = compile(source, name, "exec", dont_inherit=True)
    flags = (1).to_bytes(4, "little")
    header = importlib.util.MAGIC_NUMBER + flags + importlib.util.source_hash(source)
    return header + marshal.dumps(code)


def payload_digest(data: bytes) -> str:
    """The payload's BLAKE2b-256, in hex: its name in a host's cache, checked by the stub at
    every start. BLAKE2b, not SHA-256: CPython has it built in (`_blake2`, where
    `hashlib.blake2b` comes from too: the stub imports it directly), where `hashlib` loads
    OpenSSL (10 M instructions, 2.5 ms), and it hashes the 580 KB zip in 1.1 ms, not 1.8
    (callgrind and timeit on the test machine, Python 3.11)."""
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def stub_code(digest: str) -> str:
    """One line of Python, safe in any shell's single quotes, that loads the cached payload."""
    source = _STUB % {
        "mark": BOOT_MARK,
        "err": BOOT_ERROR,
        "need": BOOT_NEED_PAYLOAD,
        "min": MIN_PYTHON,
        "min_text": "{}.{}".format(*MIN_PYTHON),
        "hash": digest,
    }
    packed = zlib.compress(source.encode(), 9).hex()
    return f'{STUB_MARK}"{packed}")))'


@cache
def payload() -> Payload:
    """Built once per master process: the same bytes for every host."""
    return build_payload(cache_dir(os.environ))


def build_payload(cache: Path | None) -> Payload:
    """The payload, from `cache` when an earlier run built it from the same sources.

    Compiling the modules to bytecode and deflating them costs 0.06 s of CPU, a fifth of a
    one-job run on this machine; reading the sources to recognise them costs 1 ms. The cached
    zip is named by the sources' hash and its own: one whose bytes do not match its name (a
    torn write, a damaged disk) is built again, never shipped.
    """
    files = _package_files()
    key = _sources_key(files)
    if cache is not None:
        for found in sorted(cache.glob(f"payload-{key}-*.zip")):
            data = _read(found)
            digest = payload_digest(data) if data is not None else ""
            if found.name == f"payload-{key}-{digest}.zip":
                return Payload(data or b"", digest, stub_code(digest))
    data = build_zip(files)
    digest = payload_digest(data)
    if cache is not None:
        _store(cache / f"payload-{key}-{digest}.zip", data)
    return Payload(data, digest, stub_code(digest))


def cache_dir(environ: Mapping[str, str]) -> Path:
    """`$XDG_CACHE_HOME/anet` (else `~/.cache/anet`): the master's own cache."""
    cache = environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(cache):  # the XDG spec: a relative value is invalid and ignored
        cache = os.path.join(environ.get("HOME") or str(Path.home()), ".cache")
    return Path(cache, "anet")


def _sources_key(files: list[tuple[str, Path]]) -> str:
    """What the zip is made of: every file's name and bytes, this Python's bytecode magic and
    this module (which decides how they are packed)."""
    key = hashlib.sha256(importlib.util.MAGIC_NUMBER + Path(__file__).read_bytes())
    for name, path in files:
        key.update(f"\0{name}\0{path.stat().st_size}\0".encode())
        key.update(path.read_bytes())
    return key.hexdigest()[:32]


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _store(path: Path, data: bytes) -> None:
    """Written whole or not at all (a temp file renamed); a cache it cannot write is no error."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        return
    _prune(path)


def _prune(kept: Path) -> None:
    """Payloads of other sources (an older anet) go once a day old: a newer anet may still
    share this cache for a while, a developer's edits must not pile up."""
    now = time.time()
    for other in kept.parent.glob("payload-*.zip"):
        with contextlib.suppress(OSError):
            if other != kept and now - other.stat().st_mtime > PAYLOAD_KEEP:
                other.unlink()
