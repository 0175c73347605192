"""--line-buffer: the jobs' stdout on stdout as it comes, whole lines interleaved.

GNU parallel's `--line-buffer` (`--lb`) sits between its grouped output (each job's output
whole, once it ended: anet's `--format plain`) and `--ungroup`: a line is printed as soon as
it is complete, so lines of different jobs mix, but a line never does. Each attempt's last
bytes without a line break are held until more comes or the attempt ends, and go out then,
as they are (with --tag, as a line: anet's plain --tag ends every line). A line held past
HOLD bytes goes out as it is, so a job printing no line break costs bounded memory.

The result records themselves then write nothing: their stdout is already out.
Each write waits for the reader (the output's own flow control), which holds up that host's
frames, so a slow reader slows the hosts as in the other formats.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from ..core.record import JobResult
from .sinks import Encoder

HOLD = 1 << 20
"""Bytes of an unfinished line held per attempt before they go out anyway."""

Write = Callable[[bytes], Awaitable[None]]


async def _nowhere(_data: bytes) -> None:
    raise RuntimeError("LineBuffer.write was not set to the run's output")


class LineBuffer:
    """Lines of each attempt's stdout, out as they complete. `tag_of(job id)` (--tag) gives
    the prefix of each of a job's lines, before a tab.

    `encoder` writes the run's results: nothing for a job whose lines went out, and for one
    that ran in no attempt of this run (an earlier run's result, written again by --resume)
    its stdout as `grouped` writes it."""

    def __init__(
        self,
        grouped: Encoder,
        tag_of: Callable[[int], bytes] | None = None,
        forget: Callable[[int], object] | None = None,
    ) -> None:
        self.write: Write = _nowhere
        """Where lines go: the run's output, once it is open (`Delivery.write`)."""
        self._grouped = grouped
        self._tag_of = tag_of
        self._forget = forget  # a job's tag is no longer needed
        self._held: dict[int, bytes] = {}
        self._streamed: set[int] = set()  # jobs with an attempt ended, until their result
        self.encoder = Encoder("plain", b"", self._encode, self._parts)

    async def output(self, aid: int, job: int, data: bytes) -> None:
        """A chunk of the attempt's stdout: its complete lines go out now."""
        held = self._held.pop(aid, b"") + data
        end = held.rfind(b"\n") + 1
        if len(held) - end > HOLD:
            end = len(held)  # a line this long goes out unfinished: memory stays bounded
        if end < len(held):
            self._held[aid] = held[end:]
        if end:
            await self.write(self._lines(job, held[:end], whole=False))

    async def ended(self, aid: int, job: int) -> None:
        """The attempt ended: what it held of a last line goes out."""
        self._streamed.add(job)
        held = self._held.pop(aid, b"")
        if held:
            await self.write(self._lines(job, held, whole=True))

    def _lines(self, job: int, data: bytes, whole: bool) -> bytes:
        if self._tag_of is None:
            return data
        prefix = self._tag_of(job) + b"\t"
        lines = data.splitlines(keepends=True)
        if whole and not lines[-1].endswith(b"\n"):
            lines[-1] += b"\n"
        return b"".join(prefix + line for line in lines)

    def _went_out(self, result: JobResult) -> bool:
        if result.id not in self._streamed:
            return False
        self._streamed.discard(result.id)
        if self._forget is not None:
            self._forget(result.id)
        return True

    def _encode(self, result: JobResult) -> bytes:
        return b"" if self._went_out(result) else self._grouped.encode(result)

    def _parts(self, result: JobResult) -> Iterator[bytes]:
        return iter(()) if self._went_out(result) else self._grouped.parts(result)
