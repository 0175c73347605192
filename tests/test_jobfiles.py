"""Per-job files on the dispatcher (dispatcher/jobfiles.py), frame by frame: the Run waits for
its files, a killed attempt sends none back, and a path that would leave the attempt's folder
is refused whoever sent it (a master is not trusted to keep the host's files safe either)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_dispatcher import DispatcherProcess, outputs

from dispatcher.jobfiles import FILE_CHUNK, Back, Place, Put
from dispatcher.protocol import STDERR, Exit, Kill, Output, Run, Started


@pytest.fixture
def dispatcher(tmp_path) -> Iterator[DispatcherProcess]:
    """A dispatcher with 2 slots, its home under tmp_path/home."""
    made = DispatcherProcess(tmp_path / "home", 2)
    try:
        yield made
    finally:
        made.close()


def stderr_of(messages: list, aid: int) -> bytes:
    return b"".join(
        m.data for m in messages if isinstance(m, Output) and m.aid == aid and m.stream == STDERR
    )


def test_a_run_starts_once_its_files_are_whole_and_its_files_come_back_before_its_exit(
    dispatcher, tmp_path
):
    d = dispatcher
    data = bytes(range(256)) * (FILE_CHUNK // 256) + b"tail"  # two chunks
    d.send(Place(1, [b"in/x.bin"], [b"in/x.bin.md", b"absent"], True), Run(1, 0, b"pwd; "
           b"wc -c < in/x.bin > in/x.bin.md"))  # fmt: skip
    d.send(Put(1, 0, data[:FILE_CHUNK], False))
    d.send(Run(2, 1, b"echo other"))  # not held up by the one waiting for its files
    got = d.read_until(lambda m: isinstance(m, Exit) and m.aid == 2)
    assert not [m for m in got if isinstance(m, Started) and m.aid == 1]
    d.send(Put(1, 0, data[FILE_CHUNK:], False), Put(1, 0, b"", True))
    got = d.read_until(lambda m: isinstance(m, Exit) and m.aid == 1)
    backs = [m for m in got if isinstance(m, Back)]
    assert [(m.index, m.data, m.last) for m in backs] == [(0, b"%d\n" % len(data), True)]
    assert b"'absent': No such file or directory" in stderr_of(got, 1)
    assert got[-1].code == 0
    folder = outputs(got, 1).strip().decode()
    assert folder.startswith(str(tmp_path / "home" / "files"))
    assert not (tmp_path / "home" / "files" / folder).exists()  # --cleanup


def test_a_killed_attempt_sends_no_file_back_and_one_waiting_for_files_just_ends(
    dispatcher,
):
    d = dispatcher
    d.send(Place(1, [], [b"out"], False), Run(1, 0, b"echo x > out; sleep 30"))
    d.read_until(lambda m: isinstance(m, Started) and m.aid == 1)
    d.send(Place(2, [b"never"], [b"out"], True), Run(2, 1, b"cat never"))
    d.send(Kill(1, 1.0), Kill(2, 1.0))
    got = d.read_until(lambda m: isinstance(m, Exit) and m.aid == 1)
    got += (
        d.read_until(lambda m: isinstance(m, Exit) and m.aid == 2)
        if not [m for m in got if isinstance(m, Exit) and m.aid == 2]
        else []
    )
    assert not [m for m in got if isinstance(m, Back)]
    assert not [m for m in got if isinstance(m, Started) and m.aid == 2]
    assert all(m.signal is not None for m in got if isinstance(m, Exit))


def test_paths_that_leave_the_folder_are_refused_on_the_host_too(dispatcher, tmp_path):
    d = dispatcher
    for aid, place in enumerate(
        [
            Place(0, [b"../escape"], [], True),
            Place(1, [], [b"/etc/passwd"], True),
            Place(2, [b"a/./b"], [], True),
        ]
    ):
        d.send(place, Run(aid, aid, b"echo ran"))
        got = d.read_until(lambda m, aid=aid: isinstance(m, Exit) and m.aid == aid)
        assert got[-1].code == 127 and outputs(got, aid) == b""
        assert b"per-job file refused" in stderr_of(got, aid)
    assert not (tmp_path / "home" / "escape").exists()
    d.send(Place(3, [], [], False, "the master says no"), Run(3, 3, b"echo ran"))
    got = d.read_until(lambda m: isinstance(m, Exit) and m.aid == 3)
    assert got[-1].code == 127 and stderr_of(got, 3) == b"anet: the master says no\n"
    d.send(Place(4, [b"f"], [], True), Run(4, 4, b"cat f"), Put(4, 0, b"", True, "cannot read f"))
    got = d.read_until(lambda m: isinstance(m, Exit) and m.aid == 4)
    assert got[-1].code == 127 and stderr_of(got, 4) == b"anet: cannot read f\n"


def test_an_attempt_killed_while_its_files_go_back_sends_no_more_of_them(dispatcher):
    d = dispatcher
    size = 40 << 20  # 160 chunks: far more than the dispatcher sends ahead of the reader
    d.send(Place(1, [], [b"big"], True), Run(1, 0, b"head -c %d /dev/zero > big" % size))
    d.read_until(lambda m: isinstance(m, Back) and m.aid == 1)
    d.send(Kill(1, 1.0))  # a copy elsewhere won meanwhile: the rest is moot
    got = d.read_until(lambda m: isinstance(m, Exit) and m.aid == 1)
    sent = sum(len(m.data) for m in got if isinstance(m, Back))
    assert sent < size // 2
    assert not [m for m in got if isinstance(m, Back) and m.last]
    assert b"--return: not sent, the attempt was killed meanwhile: big" in stderr_of(got, 1)
