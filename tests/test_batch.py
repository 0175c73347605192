"""anet.core.batch: job ids as the original ANet numbered them, bytes kept, the file read lazily."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from original_anet import original_commands

from anet.core.batch import Job, as_jobs, count_jobs, open_batch, parse_lines, read_batch
from anet.errors import UsageError


def jobs_of(data: bytes) -> list[tuple[int, bytes]]:
    return [(job.id, job.command) for job in read_batch(io.BytesIO(data))]


# -- numbering ---------------------------------------------------------------------------------

MIXED = (
    b"echo a\n\n  \n\t\r\necho b\r\necho c\rprintf d\r\r\n \r\n\r\n\x0b\n\x0c\n"
    b"\r\r\r\n# comment\n\xc3\xa9 \xc2\x85x\xe2\x80\xa8y\x1cz\n\necho e"
)
"""Blank, white-space-only, CRLF, lone-CR and CR-CR-LF line ends, characters that
str.splitlines() would split on but a text file's lines do not, no final newline."""


def test_ids_are_the_original_anets_for_a_mixed_batch():
    expected = [
        b"echo a",
        b"  ",
        b"\t",
        b"echo b",
        b"echo c",
        b"printf d",
        b" ",
        b"\x0b",
        b"\x0c",
        b"# comment",
        b"\xc3\xa9 \xc2\x85x\xe2\x80\xa8y\x1cz",
        b"echo e",
    ]
    assert original_commands(MIXED) == expected  # the rule, read off the original's own code
    assert jobs_of(MIXED) == list(enumerate(expected))


def test_count_jobs_counts_as_the_original_numbers(tmp_path: Path):
    """The progress bar's total, a --halt percentage and `anet status` count with this."""
    path = tmp_path / "batch.txt"
    path.write_bytes(MIXED)
    assert count_jobs(path) == len(original_commands(MIXED)) == 12


def test_white_space_only_lines_are_jobs():
    assert jobs_of(b"\n \n\t\n\x0b\x0c\n") == [(0, b" "), (1, b"\t"), (2, b"\x0b\x0c")]


def test_empty_files_and_files_of_line_ends_only_have_no_jobs():
    for data in (b"", b"\n", b"\r", b"\r\n", b"\n\n\r\r\n\r\n\r"):
        assert jobs_of(data) == [], data


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_line_ending_is_stripped(ending: bytes):
    assert jobs_of(b"echo a" + ending + b"echo b" + ending) == [(0, b"echo a"), (1, b"echo b")]


def test_mixed_line_endings():
    assert jobs_of(b"a\r\nb\nc\r\n") == [(0, b"a"), (1, b"b"), (2, b"c")]


def test_a_lone_cr_ends_a_line_as_in_a_text_mode_read():
    assert jobs_of(b"echo a\recho b\n") == [(0, b"echo a"), (1, b"echo b")]
    assert jobs_of(b"a\r\rb") == [(0, b"a"), (1, b"b")]


def test_last_line_without_newline_is_a_job():
    assert jobs_of(b"echo a\necho b") == [(0, b"echo a"), (1, b"echo b")]
    assert jobs_of(b"only") == [(0, b"only")]
    assert jobs_of(b"a\n ") == [(0, b"a"), (1, b" ")]


def test_non_utf8_bytes_are_preserved():
    assert jobs_of(b"echo \xff\xfe\x80\necho \xc3(\r\n") == [
        (0, b"echo \xff\xfe\x80"),
        (1, b"echo \xc3("),
    ]


def test_command_keeps_everything_but_the_line_ending():
    """Leading and trailing blanks are the command's, not the file's."""
    assert jobs_of(b"  echo a  \n\techo b\t\r\n") == [(0, b"  echo a  "), (1, b"\techo b\t")]


pieces = st.sampled_from(
    ["a", "b", " ", "\t", "\r", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "é", "#"]
)
texts = st.lists(pieces, max_size=40).map("".join).map(str.encode)


@settings(max_examples=300)
@given(texts)
@example(b"a\r\n\rb\n \n\r")
def test_ids_are_the_original_anets_whatever_the_lines(data: bytes):
    assert jobs_of(data) == list(enumerate(original_commands(data)))


@given(texts, st.lists(st.integers(min_value=0, max_value=40), max_size=8))
def test_where_the_reads_end_does_not_change_the_jobs(data: bytes, cuts: list[int]):
    """Reads may end anywhere (a CR in one, its LF in the next): the jobs are the same."""
    bounds = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
    chunks = [data[start:end] for start, end in itertools.pairwise(bounds)]
    assert list(parse_lines(chunks)) == list(parse_lines([data]))


def test_parse_lines_is_the_pure_core():
    assert list(parse_lines([b"a\n", b"\n", b"b\r\n"])) == [Job(0, b"a"), Job(1, b"b")]
    assert list(parse_lines([b"a\r", b"\nb", b"c"])) == [Job(0, b"a"), Job(1, b"bc")]


# -- laziness ----------------------------------------------------------------------------------


class CountingStream:
    """A binary stream over a generator: counts the lines read; whole-file reads are an error."""

    def __init__(self, lines: Iterator[bytes], limit: int | None = None) -> None:
        self._lines = lines
        self.reads = 0
        self._limit = limit

    def readline(self, size: int = -1) -> bytes:
        assert size == -1 or size >= 4096, "reads so small would cost a call per few bytes"
        self.reads += 1
        if self._limit is not None and self.reads > self._limit:
            raise AssertionError(f"read line {self.reads}, past the {self._limit} needed")
        return next(self._lines, b"")

    def __iter__(self) -> CountingStream:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("read_batch must read line by line")

    def readlines(self, hint: int = -1) -> list[bytes]:
        raise AssertionError("read_batch must read line by line")


def million_lines() -> Iterator[bytes]:
    return (b"echo %d\n" % i for i in range(1_000_000))


def test_read_batch_reads_only_the_lines_it_was_asked_for():
    stream = CountingStream(million_lines())
    jobs = read_batch(stream)
    assert stream.reads == 0  # nothing read before the first job is wanted
    first = list(itertools.islice(jobs, 3))
    assert [job.id for job in first] == [0, 1, 2]
    assert first[2].command == b"echo 2"
    assert stream.reads <= 4


def test_read_batch_never_reads_past_the_jobs_taken():
    stream = CountingStream(million_lines(), limit=3)
    assert [job.command for job in itertools.islice(read_batch(stream), 3)] == [
        b"echo 0",
        b"echo 1",
        b"echo 2",
    ]


def test_read_batch_skipped_empty_lines_are_read_but_not_counted_as_jobs():
    stream = CountingStream(iter([b"\n", b"a\n", b"\r\n", b"b\n", b"c\n"] + [b"x\n"] * 10**6))
    taken = list(itertools.islice(read_batch(stream), 2))
    assert taken == [Job(0, b"a"), Job(1, b"b")]
    assert stream.reads == 4


class Served(io.BytesIO):
    """A binary stream that counts the bytes it has handed out."""

    served = 0

    def readline(self, size: int | None = -1, /) -> bytes:
        line = super().readline(size)
        self.served += len(line)
        return line


def test_a_file_of_lone_cr_line_ends_is_read_a_bit_at_a_time():
    """Classic Mac OS line ends (no LF at all): still jobs one by one, not the file at once."""
    stream = Served(b"echo x\r" * 1_000_000)
    first = list(itertools.islice(read_batch(stream), 3))
    assert first == [Job(0, b"echo x"), Job(1, b"echo x"), Job(2, b"echo x")]
    assert stream.served <= 64 * 1024


def test_a_line_longer_than_a_read_is_one_job_intact():
    long = bytes(range(32, 127)) * 5000  # 475,000 bytes, read in several pieces
    assert jobs_of(b"a\r\n" + long + b"\r\nb") == [(0, b"a"), (1, long), (2, b"b")]


# -- opening -----------------------------------------------------------------------------------


def test_open_batch_reads_the_file_as_bytes(tmp_path: Path):
    path = tmp_path / "batch"
    path.write_bytes(b"echo \xff\r\n\necho b")
    with open_batch(path) as stream:
        assert [(j.id, j.command) for j in read_batch(stream)] == [
            (0, b"echo \xff"),
            (1, b"echo b"),
        ]


def test_open_batch_accepts_a_str_path(tmp_path: Path):
    path = tmp_path / "batch"
    path.write_bytes(b"true\n")
    with open_batch(str(path)) as stream:
        assert stream.read() == b"true\n"


@pytest.mark.parametrize("name", ["missing", "with\nnewline", "dir/missing"])
def test_open_batch_on_a_missing_file_is_a_one_line_usage_error(tmp_path: Path, name: str):
    path = tmp_path / name
    with pytest.raises(UsageError) as info:
        open_batch(path)
    message = str(info.value)
    assert "\n" not in message
    assert repr(str(path)) in message or str(path) in message


def test_open_batch_on_a_directory_is_a_one_line_usage_error(tmp_path: Path):
    with pytest.raises(UsageError) as info:
        open_batch(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path) in message
    assert "directory" in message


# -- the API's commands ------------------------------------------------------------------------


def test_as_jobs_numbers_every_command_including_empty_ones():
    got = list(as_jobs(["echo a", "", "   ", b"", b"echo \xff", "é ✓"]))
    assert got == [
        Job(0, b"echo a"),
        Job(1, b""),
        Job(2, b"   "),
        Job(3, b""),
        Job(4, b"echo \xff"),
        Job(5, "é ✓".encode()),
    ]
    assert all(type(job.command) is bytes for job in got)


@given(st.lists(st.one_of(st.text(), st.binary()), max_size=20))
def test_as_jobs_id_is_the_list_index_and_str_is_utf8(commands: list[str | bytes]):
    got = list(as_jobs(commands))
    assert [job.id for job in got] == list(range(len(commands)))
    for job, command in zip(got, commands, strict=True):
        assert job.command == (command.encode("utf-8") if isinstance(command, str) else command)


def test_as_jobs_is_lazy():
    source = iter(itertools.count())
    jobs = as_jobs(str(i) for i in source)
    assert list(itertools.islice(jobs, 2)) == [Job(0, b"0"), Job(1, b"1")]
    assert next(source) == 2
