"""Command mode's templates and input sources against GNU parallel itself: for each template and
set of awkward inputs, `anet --dry-run` must print byte for byte what `parallel --dry-run`
prints (GNU parallel is a Debian package; scripts/dev-setup installs it). Plus the pure parts:
the argv split, the sources, and the user mistakes that are one line.

Where anet differs on purpose it is said, and tested as anet's own: `{%}` is `$ANET_SLOT`, and a
`:::` argument holding a newline stays one argument (GNU parallel cuts it in two).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from anet.cli import cli, raw_main
from anet.cli.argv import CommandLine, option_table, split_command
from anet.cli.common import Environment
from anet.core.inputs import Tags, generate
from anet.core.template import quote

AWKWARD = [
    "plain", "a b", "it's", "say \"hi\"", "$HOME", "`id`", "$(id)", "a*", "[ab]?", "é.ü",
    "日本語.txt", "", " ", "-n", "--help", "x.tar.gz", ".bashrc", "d/e.f/g.h", "/abs/p.q",
    "./rel", "a/", "/", "a//b", "tab\there", "back\\slash", "semi;colon", "a&b", "a|b", "~x",
    "a=b", "#x", "!x", "{}", "{1}", "'", "''", "a'b'c", "a.b.c.d", "d.i/r/x.y.z", "a.b",
    ".a.b", "a..b", "x/.y",
]  # fmt: skip
"""Arguments a shell would mangle, names with dots and slashes, empty, a leading dash."""

CASES = [
    ("echo {}", []),
    ("echo", []),  # no replacement string: ` {}` appended
    ("echo {} {.} {/} {//} {/.} {#}", []),
    ("printf '%s\\n' X{}X {.}_small.jpg", []),
    ("echo \"{}\" '{}'", []),
    ("awk '{print $1}' {}", []),  # braces that are no replacement string stay
    ("echo {1} {1.} {1/} {1//} {1/.} {-1}", []),
    ("echo {+/} {+.} {+..} {+...} {..} {...} {/..} {/...}", ["--plus"]),
    ("echo {1+/} {-1+.} {1+..} {1+...} {1..} {1...} {1/..} {-1/...} {/} {.}", ["--plus"]),
    ("echo {..} {+.} {/...}", []),  # without --plus they are no replacement strings
]
"""(template, extra options); each runs over AWKWARD as one `:::` source."""


def gnu_parallel() -> str:
    found = shutil.which("parallel")
    if found is None:
        why = "needs GNU parallel: scripts/dev-setup installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}; CI runs every test", pytrace=False)
        pytest.skip(why)
    return found


def parallel_dry_run(args: list[str]) -> bytes:
    argv = [gnu_parallel(), "--will-cite", "--dry-run", "-k", "-j1", *args]
    done = subprocess.run(argv, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout


def anet_dry_run(args: list[str], stdin: bytes = b"") -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    env = Environment(stdin=io.BytesIO(stdin), stdout=out, stderr=err, environ={})
    status = raw_main(["--dry-run", *args], env)
    return status, out.getvalue(), err.getvalue()


def same_as_parallel(args: list[str]) -> bytes:
    """anet's commands for `args`, after checking they are GNU parallel's."""
    status, mine, err = anet_dry_run(args)
    assert status == 0, err
    theirs = parallel_dry_run(args)
    assert (
        mine.decode(errors="replace").splitlines() == theirs.decode(errors="replace").splitlines()
    )
    assert mine == theirs
    return mine


@pytest.mark.parametrize(("template", "options"), CASES)
def test_templates_over_awkward_inputs_are_gnu_parallels(template, options):
    out = same_as_parallel([*options, template, ":::", *AWKWARD])
    assert out.count(b"\n") == len(AWKWARD)


@pytest.mark.parametrize(
    "args",
    [
        ["echo {1} {2}", ":::", "a", "b c", ":::", "1", "-2", "$3"],  # product, first outermost
        ["echo {2} {1} {}", ":::", "a", "b", "c", ":::+", "1", "2"],  # linked: the shorter ends
        ["echo {3} {1} {2}", ":::", "a", "b", ":::", "x", ":::+", "y"],
        ["echo {1}-{2}-{3}", ":::", "a", "b", ":::", "c", "d", ":::", "e", "f"],
        ["echo {4} {3} {2} {1} {}", "--colsep", "-", ":::", "A-B", "C-D", ":::", "e-f", "g-h"],
        ["echo {} {9}", ":::", "x", "y"],  # a position past the arguments: empty
        ["echo {#}", ":::", "a", "b", ":::", "c", "d"],
    ],
)
def test_several_sources_are_gnu_parallels(args):
    same_as_parallel(args)


def test_files_and_colsep_are_gnu_parallels(tmp_path: Path):
    table = tmp_path / "table.tsv"
    table.write_bytes(b"a\tb c\n\n x y \t z.q/w.e\r\n-d\n$x\t'q'\t\nlast\tno eol")
    numbers = tmp_path / "n.txt"
    numbers.write_bytes(b"1\n2\n")
    same_as_parallel(["echo", "{}", "::::", str(table)])
    same_as_parallel(
        ["--colsep", "\\t", "echo {} :: {1} {2} {2.} {2/} {3} {-1}", "::::", str(table)]
    )
    same_as_parallel(["--colsep", "\\t", "echo", "::::", str(table)])
    same_as_parallel(["-a", str(numbers), "-a", str(numbers), "echo"])
    same_as_parallel(["-a", str(numbers), "echo {1} {2}", ":::", "x", "y"])
    same_as_parallel(["echo {1} {2} {3}", "::::", str(numbers), ":::", "a", "b", ":::+", "c", "d"])
    same_as_parallel(["echo {1} {2}", ":::", "a", "b", "::::+", str(numbers)])
    same_as_parallel(["echo {1} {2}", "::::", str(numbers), str(numbers)])


def test_nul_separated_items_keep_their_newlines_as_gnu_parallel_does(tmp_path: Path):
    items = tmp_path / "items"
    items.write_bytes(b"a\nb\0two\nlines/x.y\n\0 \0")
    out = same_as_parallel(["-0", "echo {} {/.}", "::::", str(items)])
    assert out.startswith(b"echo 'a\nb' 'a\nb'\n")


def test_a_newline_in_a_colon_argument_stays_one_argument():
    """GNU parallel cuts `::: 'a<LF>b'` into two arguments; anet keeps what the shell gave it."""
    status, out, _ = anet_dry_run(["echo {}", ":::", "a\nb", "c"])
    assert (status, out) == (0, b"echo 'a\nb'\necho c\n")


def test_the_job_slot_is_the_hosts_variable():
    status, out, _ = anet_dry_run(["echo {%} {#}", ":::", "a", "b"])
    assert (status, out) == (0, b"echo $ANET_SLOT 1\necho $ANET_SLOT 2\n")


@pytest.mark.parametrize("value", [*AWKWARD, "new\nline", "\udcff-not-utf8"])
def test_a_quoted_value_reaches_the_shell_intact(value):
    raw = os.fsencode(value)
    done = subprocess.run(["sh", "-c", b"printf %s " + quote(raw)], capture_output=True, timeout=10)
    assert done.stdout == raw


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("-j 2 gzip {} ::: a -b", (["run", "-j", "2"], ["gzip", "{}"], [":::", "a", "-b"])),
        ("run -q echo -n ::: x", (["run", "-q"], ["echo", "-n"], [":::", "x"])),
        ("-q run -k echo :::: f", (["run", "-q", "-k"], ["echo"], ["::::", "f"])),
        ("-a f.txt sim --seed {}", (["run", "-a", "f.txt"], ["sim", "--seed", "{}"], [])),
        ("-H run -- find {} ::: x", (["run", "-H", "run"], ["find", "{}"], [":::", "x"])),
        ("-- find {} ::: x", (["run"], ["find", "{}"], [":::", "x"])),
        ("run find {} ::: x", (["run"], ["find", "{}"], [":::", "x"])),
        ("-- -x {} ::: y", (["run"], ["-x", "{}"], [":::", "y"])),
    ],
)
def test_command_mode_is_split_before_click(words, expected):
    options, command, sources = expected
    assert split_command(words.split(), cli.commands, option_table(cli)) == (
        options,
        CommandLine(command, sources),
    )


@pytest.mark.parametrize(
    "words",
    [
        "batch.txt",
        "-q batch.txt deps/",
        "status b",
        "run b.txt",
        "--onall echo{} ::: a",
        "find {} ::: x",
    ],
)
def test_batch_mode_is_left_alone(words):
    assert split_command(words.split(), cli.commands, option_table(cli)) == (words.split(), None)


def test_the_first_group_of_sources_is_read_lazily(tmp_path: Path):
    """A million-line argument file costs the jobs in flight: the first items come before the
    file is read to its end (here, before the rest of it even exists)."""
    fifo = tmp_path / "args"
    os.mkfifo(fifo)
    batch = generate(["echo"], ["::::", "-"])
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY)
    os.set_blocking(reader, True)
    with open(reader, "rb") as stream:
        os.write(writer, b"one\ntwo\n")
        commands = batch.commands(stream)
        assert next(commands) == b"echo one"
        os.write(writer, b"three")
        os.close(writer)
        assert list(commands) == [b"echo two", b"echo three"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["echo", ":::"], "anet: ::: has nothing after it: give it arguments\n"),
        (["echo", ":::", "a", ":::+"], "anet: :::+ has nothing after it: give it arguments\n"),
        (["echo", "::::", "/no/such"], "anet: cannot read input file '/no/such': No such file"),
        (["echo {= s/a/b/ =}", ":::", "a"], "anet: {= s/a/b/ =}: anet has no Perl replacement"),
        (["echo {0}", ":::", "a"], "anet: {0}: positions start at {1}\n"),
        (["--colsep", "(", "echo", ":::", "a"], "anet: --colsep '(' is not a regular expression"),
        ([":::", "a"], "anet: the command to run is empty"),
        (["echo", ":::+", "a"], "anet: :::+ links to a source before it, and there is none\n"),
        (["--colsep", ",", "batch.txt"], "anet: -a, --colsep and --null go before a command"),
        (["echo {}", "-a", "args.txt"], "anet: -a, --colsep and --null go before a command"),
        (["echo", "::::", "-", "::::", "-"], "anet: standard input (-) can be only one input"),
    ],
)
def test_a_mistake_is_one_line(args, says):
    status, out, err = anet_dry_run(args)
    assert (status, out) == (255, b"")
    assert err.startswith(says) and err.count("\n") == 1, err


def test_tags_are_kept_only_for_the_jobs_made_and_not_yet_written():
    batch = generate(["echo"], [":::", "a", "b", "c"])
    tags = Tags(lambda: batch.tagged(io.BytesIO()))
    tags.done = {1}  # a resumed run: job 1's earlier result is written again
    jobs = tags.jobs(batch.tagged(io.BytesIO()))
    assert next(jobs).id == 0
    assert tags.pop(0) == b"a"
    assert [job.id for job in jobs] == [1, 2]  # the plan would drop 1
    assert tags.pop(1) == b"b"  # from a second pass
    assert tags.pop(2) == b"c"
    assert tags._pending == {}


@pytest.mark.parametrize(
    "args",
    [
        ["-N2", "echo", "{}", ":::", "a", "b", "c", "d", "e"],
        ["-N2", "echo", "{1}", "{2}", "{3}", ":::", "a", "b", "c", "d", "e"],
        ["-N", "2", "echo", ":::", "a b", "c's", "$d"],
        ["-N2", "echo", "{1}", "{2}", ":::", "a", "b", ":::", "x", "y"],
        ["-N2", "echo", "{}", "{3}", "{4}", ":::", "a", "b", ":::", "x", "y"],
        ["-N3", "echo", "{#}", "{/}", "{-1}", "{2.}", ":::", "a/b.c", "d/e.f", "g"],
        ["-N2", "--colsep", ",", "echo", "{1}", "{2}", "{3}", "{4}", ":::", "a,b", "c,d", "e,f"],
        ["-N0", "echo", "hi", ":::", "a", "b"],
        ["-N1", "echo", "{2}x", ":::", "a", "b"],
    ],
)
def test_several_arguments_a_job_with_n_are_gnu_parallels(args):
    same_as_parallel(args)
