"""Per-job files on the dispatcher: --transfer's files in before a job, --return's back after.

An attempt with files gets a folder of its own, `<home>/files/<this dispatcher>/<aid>/`
(0700 all the way), and runs inside it: two copies of a job (a retry, a speculative copy)
never write the same file. On the wire (docs/protocol.md, "Per-job files"):

    master                               dispatcher
    Place(aid, send, back, cleanup)  ->  makes the folder; the Run after it waits ...
    Run(aid, ...)                    ->
    Put(aid, i, chunk) ... Put(last) ->  ... until every file of `send` is whole
                                         the job runs, in the folder
                                     <-  Back(aid, i, chunk) ... Back(last), for each file
                                         of `back` that the job left (else a line on its
                                         stderr, as rsync's in GNU parallel)
                                     <-  Exit(aid, ...)
                                         `cleanup`: the folder is removed

A killed attempt (a speculative copy that lost, a timeout) returns nothing: only an attempt
that ended by itself can be its job's result. Returned files are read a chunk at a time,
only while the frames to the master are below LOW_WATER, so a big file costs a chunk of
memory, and job output is never held up behind it for long.

Python 3.8+, stdlib + msgpack only: it runs on the end machines.
"""

from __future__ import annotations

import contextlib
import os
import stat

from .protocol import (
    DISPATCHER,
    MASTER,
    MAX_TEXT,
    OUTPUT_CHUNK,
    STDERR,
    Exit,
    Message,
    Output,
    Run,
    bounded,
    message,
)
from .record import frozen

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Callable, Dict, List, Optional, Tuple, Union

FILE_CHUNK = 256 * 1024
"""Put and Back frames carry at most this many bytes of a file."""


@message
@frozen
class Place(Message):
    """Master -> dispatcher, just before the Run of attempt `aid`: it runs in a folder of its
    own, gets the files `send` (paths inside that folder, in Put frames after the Run) before
    it starts, and sends the files `back` after it ends; `cleanup` removes the folder then.
    `error` (not empty): the job cannot run (a path the master refused): its Run fails at
    once with that line on its stderr."""

    CODE = 70
    SENDER = MASTER
    aid: int
    send: list
    back: list
    cleanup: bool
    error: str = ""


@message
@frozen
class Put(Message):
    """Master -> dispatcher: the next bytes of file `index` of the attempt's `send`; `last`
    ends the file, and gives it `mode`'s permission bits (less the umask, as rsync does).
    `error`: the master could not read it (the job fails with that line)."""

    CODE = 71
    SENDER = MASTER
    aid: int
    index: int
    data: bytes
    last: bool
    error: str = ""
    mode: int = 0o644


@message
@frozen
class Back(Message):
    """Dispatcher -> master, after the job ended and before its Exit: the next bytes of file
    `index` of the attempt's `back`; `last` ends the file. A file that cannot be sent sends
    none (its reason is a line of the job's stderr)."""

    CODE = 72
    SENDER = DISPATCHER
    aid: int
    index: int = bounded(0, 1 << 20)
    data: bytes = bounded(length=FILE_CHUNK)
    last: bool = False


_NOTE = "anet: %s\n"


class _Attempt:
    """One attempt's files: where they go, how many are whole, what goes back."""

    def __init__(self, place: Place, folder: bytes, error: str) -> None:
        self.folder = folder
        self.send = [bytes(path) for path in place.send]
        self.back = [bytes(path) for path in place.back]
        self.cleanup = place.cleanup
        self.error = error  # the job cannot run: said on its stderr, exit 127
        self.whole = 0  # files of `send` written whole
        self.fd = -1  # the file of `send` being written
        self.run: Optional[Run] = None  # its Run, waiting for the files
        self.killed = False
        self.exit: Optional[Message] = None  # held while its files go back
        self.back_at = 0  # the file of `back` being sent
        self.reading = -1  # its fd

    @property
    def ready(self) -> bool:
        return bool(self.error) or self.whole == len(self.send)


class JobFiles:
    """The attempts with files of one dispatcher, by aid."""

    def __init__(self, home: str, send: Callable[[Message], None]) -> None:
        self.root = os.path.join(os.fsencode(home), b"files")
        self.send = send
        self.mine: Optional[bytes] = None  # this dispatcher's folder, made when first needed
        self.attempts: Dict[int, _Attempt] = {}
        self.returning: List[int] = []
        """Attempts whose job ended, sending files back, in order: one at a time."""

    def register(self, handlers: Dict[type, Callable[[Message], None]]) -> None:
        """Place is handled here; Put by the dispatcher (`put` may release a Run to queue)."""
        handlers[Place] = self.place  # type: ignore[assignment]

    # -- in -------------------------------------------------------------------------------------

    def place(self, msg: Place) -> None:
        error = msg.error or _check_paths(msg.send + msg.back)
        folder = b""
        if not error:
            try:
                folder = self._folder(msg.aid)
            except OSError as exc:
                error = "cannot make the job's folder: %s" % (exc.strerror or exc)
        self.attempts[msg.aid] = _Attempt(msg, folder, error)

    def _folder(self, aid: int) -> bytes:
        if self.mine is None:
            os.makedirs(self.root, 0o700, exist_ok=True)
            mine = os.path.join(self.root, b"%d-%s" % (os.getpid(), os.urandom(4).hex().encode()))
            os.mkdir(mine, 0o700)
            self.mine = mine
        folder = os.path.join(self.mine, b"%d" % aid)
        os.mkdir(folder, 0o700)
        return folder

    def hold(self, run: Run) -> bool:
        """The Run waits here for its files (True), or may be queued now."""
        attempt = self.attempts.get(run.aid)
        if attempt is None or attempt.ready:
            return False
        attempt.run = run
        return True

    def put(self, msg: Put) -> Optional[Run]:
        """A chunk of a file; returns the attempt's Run once all its files are whole."""
        attempt = self.attempts.get(msg.aid)
        if attempt is None or attempt.ready or msg.index != attempt.whole:
            return None  # ended, failed already, or out of order (a master's bug: ignored)
        if msg.error:
            attempt.error = msg.error
        else:
            try:
                self._write(attempt, msg)
            except OSError as exc:
                path = _shown(attempt.send[msg.index])
                attempt.error = "--transfer: cannot write %s: %s" % (path, exc.strerror or exc)
        if attempt.error:
            self._close_writing(attempt)
        if attempt.ready and attempt.run is not None:
            run, attempt.run = attempt.run, None
            return run
        return None

    def _write(self, attempt: _Attempt, msg: Put) -> None:
        if attempt.fd < 0:
            path = os.path.join(attempt.folder, attempt.send[msg.index])
            os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            attempt.fd = os.open(path, flags, 0o666)
        view = memoryview(msg.data)
        while view:
            view = view[os.write(attempt.fd, view) :]
        if msg.last:
            os.fchmod(attempt.fd, msg.mode & 0o777 & ~_umask())
            self._close_writing(attempt)
            attempt.whole += 1

    def _close_writing(self, attempt: _Attempt) -> None:
        if attempt.fd >= 0:
            os.close(attempt.fd)
            attempt.fd = -1

    # -- the job --------------------------------------------------------------------------------

    def cwd(self, aid: int) -> Optional[bytes]:
        """The folder the attempt runs in (None: it has no files)."""
        attempt = self.attempts.get(aid)
        return attempt.folder if attempt is not None else None

    def in_folder(
        self, run: Run, cwd: Union[str, bytes], deps: Optional[bytes]
    ) -> Tuple[Run, Union[str, bytes]]:
        """The Run and the folder it runs in: its own when it has files, with the deps
        folder (if any) as $ANET_DEPS, since the job no longer runs inside it."""
        attempt = self.attempts.get(run.aid)
        if attempt is None:
            return run, cwd
        if deps is not None:
            env = dict(run.env, ANET_DEPS=os.fsdecode(deps))
            run = Run(run.aid, run.job, run.command, env, run.stdin)
        return run, attempt.folder

    def failure(self, aid: int) -> Optional[str]:
        """Why the attempt cannot run (its files could not be placed), or None."""
        attempt = self.attempts.get(aid)
        return attempt.error if attempt is not None and attempt.error else None

    def take_waiting(self, aid: int) -> Optional[Run]:
        """A Run still waiting for its files, taken out (it is killed before it started)."""
        attempt = self.attempts.get(aid)
        if attempt is None or attempt.run is None:
            return None
        run, attempt.run = attempt.run, None
        return run

    def killed(self, aid: int) -> None:
        attempt = self.attempts.get(aid)
        if attempt is not None:
            attempt.killed = True

    def ended(self, aid: int, exit: Message) -> bool:
        """The attempt's job ended: True when its Exit waits for its files to go back
        (sent by `pump`); False: send it now (the folder is already cleaned up if asked)."""
        attempt = self.attempts.get(aid)
        if attempt is None:
            return False
        if attempt.killed or not attempt.back or not isinstance(exit, Exit):
            self.drop(aid)
            return False
        attempt.exit = exit
        self.returning.append(aid)
        return True

    # -- back -----------------------------------------------------------------------------------

    def pump(self, room: Callable[[], bool]) -> None:
        """Send returned files' chunks while `room()` says the frames to the master are few."""
        while self.returning and room():
            aid = self.returning[0]
            attempt = self.attempts[aid]
            if attempt.killed and attempt.back_at < len(attempt.back):
                self._stop_returning(aid, attempt)  # a copy won meanwhile, a timeout, a halt
            if attempt.back_at == len(attempt.back):
                self.returning.pop(0)
                exit_msg = attempt.exit
                self.drop(aid)
                if exit_msg is not None:
                    self.send(exit_msg)
                continue
            self._send_chunk(aid, attempt)

    def _send_chunk(self, aid: int, attempt: _Attempt) -> None:
        index = attempt.back_at
        name = attempt.back[index]
        try:
            if attempt.reading < 0:
                attempt.reading = _open_regular(os.path.join(attempt.folder, name))
            data = os.read(attempt.reading, FILE_CHUNK)
        except OSError as exc:
            why = exc.strerror or str(exc)
            note = "--return: %s: %s (the job left no such file)" % (_shown(name), why)
            self.send(Output(aid, STDERR, (_NOTE % note).encode("utf-8", "replace")))
            self._next_back(attempt)
            return
        last = len(data) < FILE_CHUNK
        self.send(Back(aid, index, data, last))
        if last:
            self._next_back(attempt)

    def _stop_returning(self, aid: int, attempt: _Attempt) -> None:
        """Killed while its files went back: the rest is not sent, and its stderr says so
        (should its result still count, the files are not whole)."""
        names = b", ".join(attempt.back[attempt.back_at :]).decode("utf-8", "replace")
        note = "--return: not sent, the attempt was killed meanwhile: %s" % names
        self.send(Output(aid, STDERR, (_NOTE % note).encode("utf-8", "replace")))
        attempt.back_at = len(attempt.back)

    def _next_back(self, attempt: _Attempt) -> None:
        if attempt.reading >= 0:
            os.close(attempt.reading)
            attempt.reading = -1
        attempt.back_at += 1

    # -- the end --------------------------------------------------------------------------------

    def drop(self, aid: int) -> None:
        """The attempt is over (or never runs): close its files, and remove its folder if it
        asked for --cleanup."""
        attempt = self.attempts.pop(aid, None)
        if attempt is None:
            return
        self._close_writing(attempt)
        if attempt.reading >= 0:
            os.close(attempt.reading)
        if aid in self.returning:
            self.returning.remove(aid)
        if attempt.cleanup and attempt.folder:
            import shutil  # here: only --cleanup needs it, and it costs every start 4 ms

            shutil.rmtree(attempt.folder, ignore_errors=True)

    def close(self) -> None:
        """The dispatcher ends: every attempt is dropped, and this dispatcher's folder goes if
        nothing is left in it (attempts without --cleanup leave their files, as asked)."""
        for aid in list(self.attempts):
            self.drop(aid)
        if self.mine is not None:
            with contextlib.suppress(OSError):  # files kept without --cleanup
                os.rmdir(self.mine)


def _check_paths(paths: list) -> str:
    """A path the master gave that would leave the attempt's folder: the reason, else ""."""
    from .syncproto import EntryError, check_path  # the deps sync's module: loaded when needed

    for path in paths:
        try:
            check_path(path)
        except EntryError as exc:
            return "per-job file refused: %s" % str(exc)[:MAX_TEXT]
    return ""


def _umask() -> int:
    """This process's umask (set and put back: the dispatcher is single-threaded)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _open_regular(path: bytes) -> int:
    """A returned file, opened for reading: a regular file (a folder or a fifo is refused)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(0, "not a regular file")
    os.set_blocking(fd, True)
    return fd


assert FILE_CHUNK <= OUTPUT_CHUNK  # a Back frame is no bigger than an Output frame


def _shown(path: bytes) -> str:
    """A path for a message, as the deps sync shows one (its module is imported only here:
    a run without per-job files or deps never loads it)."""
    from .syncproto import show_path

    return show_path(path)
