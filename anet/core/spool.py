"""Job output too big to keep in the master's memory: spooled to a private file as it arrives.

An attempt's output stays in memory (a bytearray, then `bytes` in its result: the common case,
`echo ID`, pays nothing more) until its stdout and stderr together pass `SPOOL_AT`; from then on
each stream goes to a `Spool`: a temporary file (0600) unlinked as soon as it is made,
so no other process can open it and nothing is left on disk when it is dropped, or when the
master dies, however it dies: there is nothing to clean up at the next start. The files live
under `spool_dir()` (a 0700 directory beside the journals, on disk: /tmp is often a tmpfs,
which is memory again).

A result whose output was spooled carries the `Spool` (see record.py): sinks, the journal and
--results copy it in `CHUNK`s, so the master's memory is bounded by the work in flight however
much a job prints (invariant 4). The file goes when the last reference to the result does
(CPython frees it at once), or at `close()` for an attempt whose output became moot (a
speculative copy that lost, a killed one).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dispatcher.heap import keep_heap

SPOOL_AT: Final = 1 << 20
"""Output bytes (stdout and stderr together) an attempt keeps in memory; beyond, it spools."""
CHUNK: Final = 1 << 20
"""Bytes read from a spool at a time by whatever copies it (sinks, journal, results folder)."""


@dataclass(frozen=True, slots=True)
class OutputCap:
    """The most output one attempt may give: past `size` bytes (of stdout alone with
    `stdout_only`, else of both streams) it is killed and its job fails, with no retry (it would
    print as much again); the failure reads "its output passed {why}"."""

    size: int
    why: str
    stdout_only: bool = False


def spool_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/anet/spool` (~/.local/state/anet/spool): on disk, private to the user."""
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):  # the XDG spec: a relative value is invalid and ignored
        state = os.path.join(env.get("HOME") or str(Path.home()), ".local", "state")
    return Path(state, "anet", "spool")


def _private_dir(directory: Path) -> str:
    """The spool directory, made 0700 if new; the system's temporary directory if it cannot be
    made (a read-only home): spooling there beats holding gigabytes in memory."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return str(directory)
    except OSError:
        return tempfile.gettempdir()


class Spool:
    """One output stream in an unlinked 0600 file: `write` as it arrives, then `size`,
    `chunks()`, `read()` (whole: for callers that asked for bytes), `tail(n)`. A parked spool
    (`Parking.park`) reads a slice of a file it shares with others, and is not written to."""

    __slots__ = ("_base", "_fd", "_shared", "size")

    def __init__(self, directory: Path | None = None) -> None:
        self._fd, self._base, self._shared = _unlinked_file(directory), 0, None
        self.size = 0
        keep_heap()  # a job prints a lot: its chunks' memory is reused, not faulted in anew

    @classmethod
    def _slice(cls, shared: _SharedFile, base: int, size: int) -> Spool:
        spool = cls.__new__(cls)
        spool._fd, spool._base, spool._shared, spool.size = shared.fd, base, shared, size
        return spool

    @property
    def parked(self) -> bool:
        """Whether it reads a slice of a shared file (holding no descriptor of its own)."""
        return self._shared is not None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append `data`; OSError (ENOSPC...) is the caller's to turn into a failed job."""
        assert self._shared is None, "a parked spool is read only"
        view = memoryview(data)
        while view:  # at an explicit offset: readers pread, no file position is shared
            written = os.pwrite(self._fd, view, self.size)
            self.size += written
            view = view[written:]

    def chunks(self, size: int = CHUNK, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The contents (from `start` up to `stop`) in pieces of at most `size` bytes."""
        offset, end = start, self.size if stop is None else min(stop, self.size)
        while offset < end:
            piece = os.pread(self._fd, min(size, end - offset), self._base + offset)
            if not piece:
                raise OSError(f"spool file shorter than its {self.size} bytes")
            offset += len(piece)
            yield piece

    def read(self) -> bytes:
        """The whole contents at once (as much memory as the output is big)."""
        return b"".join(self.chunks(max(self.size, 1)))

    def tail(self, size: int) -> bytes:
        """The last `size` bytes at most."""
        start = max(self.size - size, 0)
        return os.pread(self._fd, self.size - start, self._base + start)

    def close(self) -> None:
        """Give the disk space back now (else it goes with the last reference); a parked
        spool lets go of its shared file, which goes with the last of its slices."""
        fd = getattr(self, "_fd", -1)  # unset if mkstemp failed in __init__
        if fd >= 0:
            self._fd = -1
            if getattr(self, "_shared", None) is None:
                os.close(fd)
            self._shared = None

    def __len__(self) -> int:
        return self.size

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Spool {self.size} bytes{', parked' if self.parked else ''}>"


def _unlinked_file(directory: Path | None) -> int:
    """A new 0600 file in the spool directory without a name: gone with its last fd.

    O_TMPFILE where the kernel and file system have it: such a file can still be given a name
    later (`keep`: the journal's copy of a big output, without copying it); else a file made
    and unlinked at once, which `keep` then copies."""
    where = _private_dir(directory if directory is not None else spool_dir())
    try:
        return os.open(where, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except (AttributeError, OSError):  # not Linux, or a file system without O_TMPFILE
        pass
    fd, name = tempfile.mkstemp(prefix="out-", dir=where)  # 0600
    os.unlink(name)  # open but nameless: gone with the last fd, even after a kill -9
    return fd


def keep(spool: Spool, path: Path) -> None:
    """Give the spool's file the name `path` (replacing what is there), so it outlives the
    spool: a hard link where the kernel allows one (no byte copied), else a copy made in the
    kernel (copy_file_range). Blocking: a copy of gigabytes takes seconds, so a caller on the
    event loop runs it in a thread. OSError (a full disk...) leaves nothing at `path`'s
    temporary name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    tmp.unlink(missing_ok=True)
    try:
        if spool.parked or not _link(spool._fd, tmp):  # a parked spool's file is shared
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                _copy(spool, fd, 0)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _link(fd: int, path: Path) -> bool:
    """A name for an O_TMPFILE file: through /proc/self/fd (any user, where /proc is
    mounted), else linkat(AT_EMPTY_PATH) (privileged, or a kernel of 2024 on). False when
    neither can (a file that had a name once, another file system, no such call)."""
    try:
        os.link(f"/proc/self/fd/{fd}", path, follow_symlinks=True)
        return True
    except OSError:
        pass
    return _link_empty_path(fd, path)


def _link_empty_path(fd: int, path: Path) -> bool:
    import ctypes  # here: only a big output's journal copy needs it, not every start

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.linkat(fd, b"", _AT_FDCWD, os.fsencode(path), _AT_EMPTY_PATH) == 0)
    except (AttributeError, OSError):  # no C library by that name, no linkat
        return False


_AT_FDCWD: Final = -100
_AT_EMPTY_PATH: Final = 0x1000


def opened(path: Path) -> Spool:
    """A file kept by `keep`, open for reading as a spool (the journal reading back a big
    output): FileNotFoundError if it is gone."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    spool = Spool.__new__(Spool)
    spool._fd, spool._base, spool._shared, spool.size = fd, 0, None, os.fstat(fd).st_size
    return spool


class _SharedFile:
    """One unlinked file that parked spools read slices of; closed with the last of them."""

    __slots__ = ("fd", "size")

    def __init__(self, directory: Path | None) -> None:
        self.fd, self.size = _unlinked_file(directory), 0

    def __del__(self) -> None:
        os.close(self.fd)


PARK_FILE: Final = 1 << 30
"""Bytes parked in one shared file before the next one starts: a shared file's space comes
back only when every slice of it is gone."""


class Parking:
    """Where spools wait without holding a descriptor each (keep-order holds thousands).

    `park(spool)` copies the spool to the end of a shared unlinked file (in the kernel, with
    copy_file_range where it can) and gives back a `Spool` reading that slice; the caller then
    closes the original (OSError, e.g. a full disk: the original is left as it was).
    The descriptors are then one per PARK_FILE bytes of parked output, not one per output.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        self._file: _SharedFile | None = None

    def park(self, spool: Spool) -> Spool:
        if spool.parked:
            return spool
        shared = self._file
        if shared is None or shared.size + spool.size > PARK_FILE:
            shared = self._file = _SharedFile(self._directory)
        base = shared.size
        shared.size += spool.size  # taken even if the copy fails: never reused by a slice
        _copy(spool, shared.fd, base)
        return Spool._slice(shared, base, spool.size)


def _copy(spool: Spool, fd: int, offset: int) -> None:
    """The spool's bytes (a parked one's slice) into `fd` at `offset`: copy_file_range, else a
    chunk at a time."""
    done, base = 0, spool._base
    try:
        while done < spool.size:
            left = spool.size - done
            copied = os.copy_file_range(spool._fd, fd, left, base + done, offset + done)
            if not copied:
                raise OSError(f"spool file shorter than its {spool.size} bytes")
            done += copied
    except (AttributeError, OSError) as exc:  # not Linux, or a file system that cannot
        if isinstance(exc, OSError) and exc.errno not in _NO_COPY_RANGE:
            raise
        for piece in spool.chunks(start=done):
            os.pwrite(fd, piece, offset + done)
            done += len(piece)


_NO_COPY_RANGE: Final = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP})


Output = bytes | Spool
"""A stream of a result as the master holds it: bytes when small, else spooled."""


def chunks(
    output: Output, size: int = CHUNK, start: int = 0, stop: int | None = None
) -> Iterator[bytes]:
    """`output` (from `start` up to `stop`) in pieces: the bytes themselves (no copy when
    whole), or a spool read in `size` pieces."""
    if isinstance(output, Spool):
        yield from output.chunks(size, start, stop)
    elif start or (stop is not None and stop < len(output)):
        if piece := output[start:stop]:
            yield piece
    elif output:
        yield output


SEND_AT_MOST: Final = 16 << 20
"""Bytes one `Span.send_to` call copies: a sink written from the event loop lets it run
between two such calls (a kernel copy of 16 MiB takes milliseconds)."""


@dataclass(frozen=True, slots=True)
class Span:
    """Bytes `start` to `stop` of a spool, for a sink that can have the kernel copy them
    (`send_to`: sendfile, never through the master's memory) rather than read them."""

    spool: Spool
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def send_to(self, fd: int, offset: int) -> int:
        """Copy up to SEND_AT_MOST bytes from `offset` (within the span) to `fd` with sendfile;
        the bytes copied (0 at the span's end). OSError is the caller's: EINVAL and the like
        when `fd` cannot take a kernel copy (O_APPEND, some devices), EAGAIN when it is full."""
        spool = self.spool
        count = min(self.stop - self.start - offset, SEND_AT_MOST)
        if count <= 0:
            return 0
        sent = os.sendfile(fd, spool._fd, spool._base + self.start + offset, count)
        if not sent:
            raise OSError(f"spool file shorter than its {spool.size} bytes")
        return sent


NO_KERNEL_COPY: Final = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
"""What sendfile says when its output cannot take a kernel copy: then it is read and written."""


def spans(output: Output, start: int = 0, stop: int | None = None) -> Iterator[bytes | Span]:
    """As `chunks`, but a spool (its part from `start` up to `stop`) as one Span: for a sink
    that copies spools in the kernel."""
    if isinstance(output, Spool):
        end = output.size if stop is None else min(stop, output.size)
        if start < end:
            yield Span(output, start, end)
    else:
        yield from chunks(output, CHUNK, start, stop)


def pieces(output: Output, size: int = CHUNK) -> Iterator[bytes | memoryview]:
    """`output` in pieces of at most `size` bytes, for a bounded frame or value each: slices of
    bytes (views, no copy), or reads of a spool."""
    if isinstance(output, Spool):
        return output.chunks(size)
    view = memoryview(output)
    return (view[at : at + size] for at in range(0, len(view), size))


def tail(output: Output, size: int) -> bytes:
    """The last `size` bytes of `output`."""
    return output.tail(size) if isinstance(output, Spool) else output[-size:]
