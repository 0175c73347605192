"""Per-job files: which files go to the host before a job, which come back after it.

GNU parallel's --transfer, --transferfile (--tf), --return and --cleanup, as far as they
apply to anet: a job with files runs on the host in a folder of its own, and a file keeps its
path relative to the current directory inside that folder, so the command's `{}` names it
there as here. A path with `/./` keeps only what follows (`out/./{}.out` comes back from
`{}.out` on the host into `out/`), as GNU parallel (rsync -R) has it. An absolute path, or
one that climbs out with `..`, cannot be placed in the job's folder: such a job fails at
once, its reason on its stderr.

Pure: the template expands names; whether a file exists is asked of the file system only
for --transfer's arguments (GNU parallel's `{}`: anet sends each argument that names a
file, so `::: 1 2 ::: a.txt` sends a.txt alone).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from .template import Template


@dataclass(frozen=True, slots=True)
class JobFiles:
    """One job's files: `send` (local path, path in the job's folder on the host), `back`
    (path on the host, local path), `cleanup` (remove the folder after), and `error`: why
    the job cannot run (a path it cannot place), "" when it can."""

    send: tuple[tuple[bytes, bytes], ...] = ()
    back: tuple[tuple[bytes, bytes], ...] = ()
    cleanup: bool = False
    error: str = ""


@dataclass(frozen=True, slots=True)
class FileRules:
    """The per-job file options of a command line; `files(args, number)` is one job's."""

    transfer: bool = False
    """--transfer: each argument naming a local file goes to the host."""
    transfer_files: tuple[Template, ...] = ()  # --transferfile/--tf TEMPLATE, repeatable
    returns: tuple[Template, ...] = ()  # --return TEMPLATE, repeatable
    cleanup: bool = False

    @property
    def any(self) -> bool:
        return self.transfer or bool(self.transfer_files or self.returns)

    @classmethod
    def parse(
        cls,
        transfer: bool,
        transfer_files: Sequence[str],
        returns: Sequence[str],
        cleanup: bool,
        trc: Sequence[str],
        plus: bool = False,
    ) -> FileRules:
        """The options as given; --trc X is --transfer --return X --cleanup; `plus`: the
        templates know --plus's replacement strings."""
        templates = [_template(text, plus) for text in (*returns, *trc)]
        return cls(
            transfer or bool(trc),
            tuple(_template(text, plus) for text in transfer_files),
            tuple(templates),
            cleanup or bool(trc),
        )

    def files(self, args: Sequence[bytes], number: int) -> JobFiles | None:
        if not self.any:
            return None
        sent: list[bytes] = []
        if self.transfer:
            sent += [arg for arg in args if os.path.isfile(arg)]
        sent += [template.expand(args, number, quoted=False) for template in self.transfer_files]
        backs = [template.expand(args, number, quoted=False) for template in self.returns]
        try:
            send = tuple(dict.fromkeys((path, on_host(path)) for path in sent))
            back = tuple(dict.fromkeys((on_host(path), here(path)) for path in backs))
        except ValueError as exc:
            return JobFiles(cleanup=self.cleanup, error=str(exc))
        return JobFiles(send, back, self.cleanup)


def _template(text: str, plus: bool) -> Template:
    """A file name template: no ` {}` appended when it has no replacement string (a fixed
    name is a fixed name)."""
    return Template.parse([os.fsencode(text)], append=False, plus=plus)


def on_host(path: bytes) -> bytes:
    """Where `path` is in the job's folder: relative, `/./` keeps what follows, `.` parts
    dropped. ValueError for a path that cannot be placed there (the job's failure)."""
    _, marked, rest = path.rpartition(b"/./")
    if not marked:
        if path.startswith(b"/"):
            raise ValueError(
                f"--transfer/--return: {_show(path)} is an absolute path; anet places a job's"
                " files in a folder of its own on the host: use a path relative to the current"
                " directory, or mark the part to keep with /./ (as /data/./in.txt)"
            )
        rest = path
    parts = [part for part in rest.split(b"/") if part not in (b"", b".")]
    if b".." in parts or not parts:
        raise ValueError(
            f"--transfer/--return: {_show(path)} leaves the job's folder (..) or names none"
        )
    return b"/".join(parts)


def here(path: bytes) -> bytes:
    """Where a returned file goes on this machine: its path without the `/./` mark."""
    head, marked, rest = path.rpartition(b"/./")
    return head + b"/" + rest if marked else path


def _show(path: bytes) -> str:
    return repr(os.fsdecode(path))
