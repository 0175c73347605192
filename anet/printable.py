"""Text from a host, made safe to show: control characters become visible escapes.

An end machine is not trusted (docs/guide.md, "Security model"). What it says (a start-up error,
its hostname, the tail of its stderr, a process's command line, a sync error, a job's last stderr
line in the summary) is shown to the user, and a terminal obeys escape sequences: a host could
retitle the window, clear the screen, hide text, move the cursor to forge anet's own lines, or
(with OSC 52, on some terminals) write the clipboard. So every such string goes through
`printable` where it is displayed: the log renderer (anet/logs.py), the one-line errors of the
CLI, the tables of `find`, `killall`, `hosts check`, `sync` and the summaries.

One escaping everywhere, Python's: `\\x1b`, `\\n`, `\\t`, `\\u202e`. Tabs and newlines are escaped
too: every place that shows host text shows it on one line or in one cell, where a newline
would forge a line and a tab would break the columns. Besides C0/C1 controls and DEL, the
Unicode bidirectional overrides are escaped (they reorder what the eye reads, "Trojan source"),
and so are the lone surrogates that `surrogateescape` makes of bytes that are not UTF-8 (shown
as the byte, `\\xff`). Everything else, non-ASCII letters included, is shown as it is.

Not escaped: job output the user asked for (the result stream on stdout, `--format text`,
`anet onall`'s output, `--results`): that is data, exactly as the job wrote it.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control character (and bidi override) escaped, on one line."""
    return _UNSAFE.sub(_escape, text)


def failure_line(error: str | None, stderr: bytes | None) -> str | None:
    """Why a job failed, on one printable line: anet's own explanation (which may quote a host),
    else the last non-blank line of its stderr, cut at 200 characters; None if neither says.
    The run summary and `anet status` both show it."""
    if error:
        return printable(" ".join(error.split()))
    for line in reversed((stderr or b"").splitlines()):
        if line.strip():
            return printable(line.decode("utf-8", "replace").strip()[:200])
    return None
