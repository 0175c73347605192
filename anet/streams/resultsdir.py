"""`--results DIR`: every job's final result as files, DIR/<id>/{stdout,stderr,meta.json}.

Written atomically: the three files go into a hidden sibling directory that is then renamed to
DIR/<id>, so a reader (or a crash) never sees a job's folder half written. A result written
again (a --resume rerun of a failed job) replaces the old folder the same way. meta.json holds
the result's other fields, as the jsonl format names them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..core.record import JobResult
from ..core.spool import Output, chunks
from ..errors import UsageError
from .sinks import head_fields

META = "meta.json"


def meta(result: JobResult) -> dict[str, object]:
    """The result without its outputs."""
    return {
        **head_fields(result),
        "error": result.error,
        "stdout_bytes": len(result.out),
        "stderr_bytes": len(result.err),
    }


class ResultsDir:
    """Writes results under one directory; `write` blocks briefly on the local filesystem."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot create results directory {self.root}: {exc.strerror}"
            ) from None

    def write(self, result: JobResult) -> None:
        final = self.root / str(result.id)
        tmp = self.root / f".{result.id}.{os.getpid()}.tmp"
        try:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            _write(tmp / "stdout", result.out)
            _write(tmp / "stderr", result.err)
            (tmp / META).write_text(json.dumps(meta(result), indent=1) + "\n", encoding="utf-8")
            if final.exists():  # rename(2) will not replace a non-empty directory
                old = self.root / f".{result.id}.{os.getpid()}.old"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old)
            else:
                os.replace(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UsageError(
                f"cannot write results of job {result.id} in {self.root}: {exc}"
            ) from None


def _write(path: Path, output: Output) -> None:
    """An output to its file, a spool a chunk at a time."""
    with path.open("wb") as file:
        for piece in chunks(output):
            file.write(piece)


def read_result(folder: str | os.PathLike[str]) -> JobResult:
    """A job's result back from its folder (tests and tools)."""
    folder = Path(folder)
    info = json.loads((folder / META).read_text(encoding="utf-8"))
    return JobResult(
        info["id"], info["ok"], info["exit"], info["signal"], info["host"], info["attempts"],
        info["duration"], (folder / "stdout").read_bytes(), (folder / "stderr").read_bytes(),
        info["error"],
    )  # fmt: skip
