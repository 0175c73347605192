"""anet.views.tables: the one table renderer and the one size formatter every view uses."""

from __future__ import annotations

from anet.views.tables import KIB_LETTERS, align_columns, size_text, table


def test_sizes_in_bytes_and_in_kib_letters():
    assert [size_text(n) for n in (0, 1023, 1024, 1536, 5 << 30, 5 << 40)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 GiB", "5120.0 GiB",
    ]  # fmt: skip
    assert [size_text(n, KIB_LETTERS) for n in (0, 1023, 1024, 3 << 29, 1 << 40)] == [
        "0K", "1023K", "1.0M", "1.5T", "1024.0T",
    ]  # fmt: skip


def test_names_left_numbers_right_no_trailing_space_and_column_starts():
    lines, starts = align_columns(
        ["host", "state", "done"], [["h1", "ok", "7"], ["host22", "", "1234"]], [False, False, True]
    )
    assert lines == ["host    state  done", "h1      ok        7", "host22         1234"]
    assert starts == [0, 8, 15]
    assert table(["host", "jobs"], [["a", "5"]]) == ["host  jobs", "a        5"]
