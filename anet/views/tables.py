"""Plain-text tables and the sizes in them: one renderer and one size formatter for every view.

The run summary, `anet status`, the live view, the housekeeping commands (find, killall, hosts
check, scan) and `anet sync` all draw their tables here, so a column looks the same everywhere
and a fix to alignment is made once. Pure functions of strings: escaping what a host said is
the caller's business (it knows which cells came from a host).
"""

from __future__ import annotations

from collections.abc import Sequence

BYTES = (" B", " KiB", " MiB", " GiB")
"""Units for a count of bytes: `512 B`, `3.4 MiB` (what `anet sync` shows)."""
KIB_LETTERS = ("K", "M", "G", "T")
"""Units for a count of KiB, in `ps`/`df -h` style letters: `512K`, `1.5G` (`anet hosts check`)."""


def align_columns(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]
) -> tuple[list[str], list[int]]:
    """Lines of a plain table: columns two spaces apart, each as wide as its widest cell, aligned
    left (names) or, where `right` says so, right (numbers); no line ends in spaces. Also each
    column's start offset, for styling cells afterwards."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    starts = [sum(widths[:i]) + 2 * i for i in range(len(widths))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if flush_right else cell.ljust(width)
            for cell, width, flush_right in zip(cells, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return [line(header), *(line(r) for r in rows)], starts


def fit_columns(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Sequence[bool],
    width: int,
    dropped_first: Sequence[int],
) -> tuple[list[str], list[int], list[int]]:
    """`align_columns` for a screen `width` wide: a line that wraps breaks a table in two, so
    when it is too wide the columns in `dropped_first` go, in that order, until it fits; then
    the first column (names) is cut short, marked with an ellipsis; at worst lines are cropped.
    Returns the lines, each shown column's start, and the indexes of the columns shown."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    kept = list(range(len(header)))
    for index in dropped_first:
        if _span(widths, kept) <= width:
            break
        kept.remove(index)
    shown_header = [header[i] for i in kept]
    shown_rows = [[r[i] for i in kept] for r in rows]
    excess = _span(widths, kept) - width
    if excess > 0:
        limit = max(widths[kept[0]] - excess, 1)
        for cells in [shown_header, *shown_rows]:
            cells[0] = shorten(cells[0], limit)
    lines, starts = align_columns(shown_header, shown_rows, [right[i] for i in kept])
    return [line[:width] for line in lines], starts, kept


def _span(widths: Sequence[int], kept: Sequence[int]) -> int:
    """The width of a line showing the columns `kept`, two spaces apart."""
    return sum(widths[i] for i in kept) + 2 * (len(kept) - 1)


def shorten(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, an ellipsis marking a cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def names_then_numbers(columns: int, names: int = 1) -> list[bool]:
    """The `right` of a table whose first `names` columns hold names, the others numbers."""
    return [i >= names for i in range(columns)]


def table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """The lines of a table whose first `left` columns are names and the others numbers."""
    return align_columns(header, rows, names_then_numbers(len(header), left))[0]


def size_text(count: float, units: Sequence[str] = BYTES) -> str:
    """`count` of `units[0]` in the largest unit it reaches (1024 of one make the next), the
    last however large: a whole number in the first unit, to a tenth in the others."""
    index = 0
    while count >= 1024 and index < len(units) - 1:
        count /= 1024
        index += 1
    return (f"{count:.0f}" if index == 0 else f"{count:.1f}") + units[index]
