"""GNU parallel's command templates: `gzip {}` and one job's arguments in, a command line out.

A template is the command words joined by spaces (as GNU parallel joins them), with these
replacement strings, each given the job's arguments *shell-quoted* (so a name with blanks,
quotes, `$`, backticks or a newline reaches the job as it was):

    {}    the arguments, separated by spaces     {.}   without its extension
    {/}   the base name                          {//}  the directory (Perl's dirname)
    {/.}  the base name without its extension    {#}   the job's number, from 1
    {%}   the job slot: `$ANET_SLOT`, expanded on the host (see below)
    {n} {n.} {n/} {n//} {n/.}   the same for the n-th argument (from the end if negative)

`{%}` cannot be known when the command is written: the slot is chosen on the host at
dispatch. So it becomes `$ANET_SLOT`, which the dispatcher exports to every job (1 to the
host's slots, the lowest free one, per host: GNU parallel numbers slots across all hosts).

A template with none of these gets ` {}` appended, as GNU parallel does. Braces that are not
one of them (`awk '{print $1}'`, `{a,b}`) stay as they are, also as GNU parallel leaves
them; a Perl expression `{= ... =}` is refused, since anet has no Perl. Work is on bytes,
so file names that are not UTF-8 pass unchanged; the regular expressions below are GNU
parallel's own (Python's `.` and `$` read them as Perl does).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import UsageError

SLOT_VARIABLE = b"$ANET_SLOT"
"""What `{%}` expands to; dispatcher/runner.py exports ANET_SLOT to each job."""

_FORM = re.compile(rb"\{(#|%|(-?[0-9]+)?(|\.|/|//|/\.))\}")
"""Every replacement string: `{#}`, `{%}`, then an optional position and an operation."""
_PLUS_FORM = re.compile(
    rb"\{(#|%|(-?[0-9]+)?(|\.|/|//|/\.|\+/|\+\.|\+\.\.|\+\.\.\.|\.\.|\.\.\.|/\.\.|/\.\.\.))\}"
)
"""With --plus, also GNU parallel's `{+/}` `{+.}` `{+..}` `{+...}` `{..}` `{...}` `{/..}`
`{/...}` (`{}` is `{+/}/{/}`, `{.}.{+.}`, `{..}.{+..}`...), positional too: `{2+.}`."""
_PERL = re.compile(rb"\{=.*?=\}", re.S)
_SAFE = re.compile(rb"[^-_.+a-zA-Z0-9/]")
"""GNU parallel quotes a value holding any byte outside this set."""


class TemplateError(UsageError):
    """The template cannot be expanded as asked; one line for the user."""


def _as_is(value: bytes) -> bytes:
    return value


def quote(value: bytes) -> bytes:
    """One value as GNU parallel's `shell_quote_scalar_default` quotes it for sh, byte for byte:
    as it is when only safe bytes, else in single quotes (a `'` as `'"'"'`), minus `''` at
    either end."""
    if not value:
        return b"''"
    if not _SAFE.search(value):
        return value
    quoted = b"'" + value.replace(b"'", b"'\"'\"'") + b"'"
    return quoted.removeprefix(b"''").removesuffix(b"''")


def dirname(path: bytes) -> bytes:
    """Perl's File::Basename::dirname on Unix, which GNU parallel's `{//}` is: `a/` -> `.`,
    `/` -> `/`, `a//b` -> `a`."""
    head, base = _fileparse(path)
    head = _strip_trailing_slashes(head)
    if not base:
        head, base = _fileparse(head)
        head = _strip_trailing_slashes(head)
    return head


def _fileparse(path: bytes) -> tuple[bytes, bytes]:
    match = re.match(rb"(.*/)?(.*)", path, re.S)
    assert match is not None  # the pattern matches any string
    return match[1] or b"./", match[2]


def _strip_trailing_slashes(path: bytes) -> bytes:
    return re.sub(rb"(.)/*\Z", rb"\1", path, count=1, flags=re.S)


_EXTENSION = re.compile(rb"\.[^/.]*$")
_DIRECTORY = re.compile(rb".*/")
_PLUS: dict[bytes, tuple[re.Pattern[bytes], bytes, bool]] = {
    b"+/": (re.compile(rb"/[^/]*$"), b"", True),
    b"+.": (re.compile(rb".*\."), b"", True),
    b"+..": (re.compile(rb".*\.([^/.]*\.[^/.]*)$"), rb"\1", True),
    b"+...": (re.compile(rb".*\.([^/.]*\.[^/.]*\.[^/.]*)$"), rb"\1", True),
    b"..": (re.compile(rb"\.[^/.]*\.[^/.]*$"), b"", False),
    b"...": (re.compile(rb"\.[^/.]*\.[^/.]*\.[^/.]*$"), b"", False),
}
"""--plus's operations, GNU parallel's Perl substitutions: (pattern, replacement, whether no
match gives the empty string: its `s:...:...: || s:.*$::`)."""


def _operate(operation: bytes, value: bytes) -> bytes:
    """One argument under `.`, `/`, `//` or `/.` (GNU parallel's regular expressions)."""
    if not operation:
        return value
    if operation in _PLUS or operation in (b"/..", b"/..."):
        return _plus(operation, value)
    if operation == b".":
        return _EXTENSION.sub(b"", value, count=1)
    if operation == b"//":
        return dirname(value)
    base = _DIRECTORY.sub(b"", value, count=1)
    return base if operation == b"/" else _EXTENSION.sub(b"", base, count=1)


def _plus(operation: bytes, value: bytes) -> bytes:
    if operation.startswith(b"/"):  # {/..} {/...}: the base name, then {..} {...}
        value, operation = _DIRECTORY.sub(b"", value, count=1), operation[1:]
    pattern, replacement, or_empty = _PLUS[operation]
    result, found = pattern.subn(replacement, value, count=1)
    return b"" if or_empty and not found else result


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed command template: `expand(args, number)` is one job's command."""

    pieces: tuple[bytes | tuple[bytes, int | None, bytes], ...]
    """Literal bytes, or (form, position, operation): form is b"#", b"%" or b"" (an argument)."""

    @classmethod
    def parse(cls, words: Sequence[bytes], append: bool = True, plus: bool = False) -> Template:
        """The command words, joined by spaces; ` {}` appended when no replacement string
        (unless not `append`: a file name for --return is what it says); `plus`: --plus's
        replacement strings too."""
        forms = _PLUS_FORM if plus else _FORM
        text = b" ".join(words)
        if not text.strip():
            raise TemplateError("the command to run is empty (give it before ::: or -a's files)")
        perl = _PERL.search(text)
        if perl is not None:
            form = perl[0].decode(errors="replace")
            raise TemplateError(f"{form}: anet has no Perl replacement strings {{= =}}")
        if append and forms.search(text) is None:
            text += b" {}"
        pieces: list[bytes | tuple[bytes, int | None, bytes]] = []
        at = 0
        for match in forms.finditer(text):
            pieces.append(text[at : match.start()])
            pieces.append(_form(match))
            at = match.end()
        pieces.append(text[at:])
        return cls(tuple(piece for piece in pieces if piece != b""))

    def expand(self, args: Sequence[bytes], number: int, quoted: bool = True) -> bytes:
        """The command for job `number` (from 1) with these arguments (columns, in order);
        not `quoted`: the values as they are (a file name, for --transferfile, --return)."""
        quote = _quote if quoted else _as_is
        out: list[bytes] = []
        for piece in self.pieces:
            if isinstance(piece, bytes):
                out.append(piece)
                continue
            form, position, operation = piece
            if form == b"#":
                out.append(str(number).encode())
            elif form == b"%":
                out.append(SLOT_VARIABLE)
            elif position is None and len(args) == 1:  # the common case, without a join
                out.append(quote(_operate(operation, args[0])))
            elif position is None:
                out.append(b" ".join(quote(_operate(operation, arg)) for arg in args))
            elif -len(args) <= position < len(args):
                out.append(quote(_operate(operation, args[position])))
            # a position past the arguments is empty, unquoted, as GNU parallel has it
        return b"".join(out)


_quote = quote


def _form(match: re.Match[bytes]) -> tuple[bytes, int | None, bytes]:
    if match[1] in (b"#", b"%"):
        return match[1], None, b""
    if match[2] is None:
        return b"", None, match[3]
    position = int(match[2])
    if position == 0:
        raise TemplateError(f"{match[0].decode()}: positions start at {{1}}")
    return b"", position - 1 if position > 0 else position, match[3]
