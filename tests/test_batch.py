"""anet.core.batch: job ids as the original ANet numbered them, bytes kept, the file read lazily."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from anet.core.batch import Job, as_jobs, open_batch, parse_lines, read_batch
from anet.errors import UsageError


def jobs_of(data: bytes) -> list[tuple[int, bytes]]:
    return [(job.id, job.command) for job in read_batch(io.BytesIO(data))]


# -- numbering -------------------------------------------------------------------------------


def test_ids_count_only_non_empty_lines():
    data = b"\necho a\n\n   \n\t\necho b\r\n \r\n\x0b\x0c\necho c\n\n"
    assert jobs_of(data) == [(0, b"echo a"), (1, b"echo b"), (2, b"echo c")]


def test_empty_and_blank_only_files_have_no_jobs():
    assert jobs_of(b"") == []
    assert jobs_of(b"\n\n \n\t\r\n") == []


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_line_ending_is_stripped(ending: bytes):
    assert jobs_of(b"echo a" + ending + b"echo b" + ending) == [(0, b"echo a"), (1, b"echo b")]


def test_mixed_line_endings():
    assert jobs_of(b"a\r\nb\nc\r\n") == [(0, b"a"), (1, b"b"), (2, b"c")]


def test_last_line_without_newline_is_a_job():
    assert jobs_of(b"echo a\necho b") == [(0, b"echo a"), (1, b"echo b")]
    assert jobs_of(b"only") == [(0, b"only")]


def test_non_utf8_bytes_are_preserved():
    assert jobs_of(b"echo \xff\xfe\x80\necho \xc3(\r\n") == [
        (0, b"echo \xff\xfe\x80"),
        (1, b"echo \xc3("),
    ]


def test_command_keeps_everything_but_the_line_ending():
    """Leading/trailing blanks and a CR inside the line are the command's, not the file's."""
    assert jobs_of(b"  echo a  \n\techo\rb\t\r\n") == [(0, b"  echo a  "), (1, b"\techo\rb\t")]


commands = st.binary(max_size=30).filter(
    lambda b: b.strip() != b"" and b"\n" not in b and not b.endswith(b"\r")
)
blanks = st.text(alphabet=" \t\x0b\x0c\r", max_size=4).map(str.encode)
lines = st.lists(st.one_of(commands, blanks), max_size=25)


@given(lines, st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=25, max_size=25), st.booleans())
@example([b"a", b"", b"b"], [b"\n"] * 25, False)
def test_ids_are_indexes_among_non_empty_lines(
    lines: list[bytes], endings: list[bytes], final_newline: bool
):
    data = b"".join(line + end for line, end in zip(lines, endings, strict=False))
    if lines and not final_newline:
        data = data[: -len(endings[len(lines) - 1])]
    expected = list(enumerate(line for line in lines if line.strip()))
    assert jobs_of(data) == expected


def test_parse_lines_is_the_pure_core():
    assert list(parse_lines([b"a\n", b"\n", b"b\r\n"])) == [Job(0, b"a"), Job(1, b"b")]


# -- laziness ----------------------------------------------------------------------------------


class CountingStream:
    """A binary stream over a generator: counts the lines read; whole-file reads are an error."""

    def __init__(self, lines: Iterator[bytes], limit: int | None = None) -> None:
        self._lines = lines
        self.reads = 0
        self._limit = limit

    def readline(self, size: int = -1) -> bytes:
        assert size == -1, "a job's command must not be truncated"
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


def test_read_batch_skipped_blank_lines_are_read_but_not_counted_as_jobs():
    stream = CountingStream(iter([b"\n", b"a\n", b"   \n", b"b\n", b"c\n"] + [b"x\n"] * 10**6))
    taken = list(itertools.islice(read_batch(stream), 2))
    assert taken == [Job(0, b"a"), Job(1, b"b")]
    assert stream.reads == 4


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
