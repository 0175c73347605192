"""anet.remote.hosts: GNU parallel sshlogins, hosts files, and which hosts a run uses."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anet import logs
from anet.cli.common import Environment, HostArgs
from anet.errors import UsageError
from anet.remote.hosts import (
    LOCAL,
    LOCAL_LABEL,
    HostSpec,
    parse_hosts_text,
    parse_spec,
    resolve_hosts,
)

# -- one spec ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host", HostSpec("host")),
        ("user@host", HostSpec("host", user="user")),
        ("host:2222", HostSpec("host", port=2222)),
        ("8/user@host:2222", HostSpec("host", user="user", port=2222, slots=8)),
        ("8/host", HostSpec("host", slots=8)),
        (":", HostSpec(LOCAL)),
        ("4/:", HostSpec(LOCAL, slots=4)),
        ("[::1]:22", HostSpec("::1", port=22)),
        ("[::1]", HostSpec("::1")),
        ("user@[fe80::1]", HostSpec("fe80::1", user="user")),
        ("2/root@[2001:db8::7]:2200", HostSpec("2001:db8::7", user="root", port=2200, slots=2)),
        ("10.0.0.1:65535", HostSpec("10.0.0.1", port=65535)),
        ("node-1.example.com", HostSpec("node-1.example.com")),
        ("  user@host  ", HostSpec("host", user="user")),
    ],
)
def test_parse_spec_gnu_parallel_forms(text: str, expected: HostSpec):
    assert parse_spec(text) == expected


def test_colon_is_the_local_machine():
    assert parse_spec(":").local
    assert parse_spec("4/:").local
    assert not parse_spec("host").local


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("host", "host"),
        ("user@host", "user@host"),
        ("host:2222", "host:2222"),
        ("8/user@host:2222", "user@host:2222"),  # slots are not part of the machine's name
        (":", LOCAL_LABEL),
        ("4/:", LOCAL_LABEL),
        ("[::1]:22", "[::1]:22"),  # brackets kept: '::1:22' would be another address
        ("[::1]", "[::1]"),
        ("user@[fe80::1]", "user@[fe80::1]"),
        ("2/root@[2001:db8::7]:2200", "root@[2001:db8::7]:2200"),
    ],
)
def test_label(text: str, label: str):
    assert parse_spec(text).label == label


@pytest.mark.parametrize(
    "text", ["host", "u@h:2", "[::1]:22", "[::1:22]", "user@[fe80::1]", "3/[::1]"]
)
def test_label_parses_back_to_the_same_machine(text: str):
    spec = parse_spec(text)
    assert parse_spec(spec.label) == spec.with_slots(None)


names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)


@given(
    st.none() | st.integers(1, 512),
    st.none() | names,
    names | st.sampled_from(["[::1]", "[fe80::1]", "[2001:db8::42]"]),
    st.none() | st.integers(1, 65535),
)
def test_parse_spec_reads_every_part(
    slots: int | None, user: str | None, host: str, port: int | None
):
    text = (
        (f"{slots}/" if slots else "")
        + (f"{user}@" if user else "")
        + host
        + (f":{port}" if port else "")
    )
    assert parse_spec(text) == HostSpec(host.strip("[]"), user, port, slots)


BAD_SPECS = [
    "",
    "   ",
    "user@",
    "@host",
    "@@x",
    "user@@host",
    "0/host",
    "0/:",
    "x/host",
    "/host",
    "4/",
    "host:0",
    "host:70000",
    "host:",
    "host:ssh",
    "a b",
    "[::1",
    "host/x",
    ":22",
    "²/:",  # str.isdigit() says yes, int() says no
    "²/host",
    "٤/host",  # non-ASCII decimal digits are not slots...
    "host:٢٢",  # ...nor a port
]


@pytest.mark.parametrize("text", BAD_SPECS)
def test_bad_spec_is_a_usage_error_naming_the_spec(text: str):
    with pytest.raises(UsageError) as info:
        parse_spec(text)
    message = str(info.value)
    assert repr(text.strip()) in message
    assert "\n" not in message


# -- hosts files -------------------------------------------------------------------------------


def test_hosts_text_skips_comments_and_blank_lines():
    text = "# cluster A\n\nnode1\n   \n4/user@node2:2222  # the big one\n\t:\n#:\n"
    assert parse_hosts_text(text, "f") == [
        HostSpec("node1"),
        HostSpec("node2", user="user", port=2222, slots=4),
        HostSpec(LOCAL),
    ]


def test_hosts_text_with_only_comments_is_empty():
    assert parse_hosts_text("# nothing\n\n   # here\n", "f") == []


def test_hosts_file_error_names_file_and_line(tmp_path: Path):
    path = tmp_path / "hosts"
    path.write_text("# header\n\nnode1\n0/node2\nnode3\n")
    with pytest.raises(UsageError) as info:
        resolve_hosts(files=[path], environ={})
    message = str(info.value)
    assert message.startswith(f"{path}:4:")
    assert "'0/node2'" in message
    assert "\n" not in message


def test_hosts_text_error_counts_comment_and_blank_lines():
    with pytest.raises(UsageError, match=r"^origin:3: .*'a b'"):
        parse_hosts_text("#\n\na b\n", "origin")


def test_missing_hosts_file_is_a_usage_error_naming_it(tmp_path: Path):
    path = tmp_path / "nope"
    with pytest.raises(UsageError, match="nope"):
        resolve_hosts(files=[path], environ={})


# -- which hosts a run uses ----------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def labels(hosts: list[HostSpec]) -> list[str]:
    return [host.label for host in hosts]


def test_default_is_the_local_machine():
    assert resolve_hosts(environ={}) == [HostSpec(LOCAL)]
    assert resolve_hosts(environ={"ANET_HOSTS": ""}) == [HostSpec(LOCAL)]


def test_specs_and_files_combine(tmp_path: Path):
    one = write(tmp_path / "one", "b\nc\n")
    two = write(tmp_path / "two", "d\n")
    assert labels(resolve_hosts(["a", "x@e:2"], [one, two], environ={})) == [
        "a",
        "x@e:2",
        "b",
        "c",
        "d",
    ]


def test_env_hosts_file_is_used_when_nothing_else_is_given(tmp_path: Path):
    env_file = write(tmp_path / "env", "envhost1\nenvhost2\n")
    assert labels(resolve_hosts(environ={"ANET_HOSTS": str(env_file)})) == ["envhost1", "envhost2"]


def test_env_hosts_file_is_ignored_with_specs(tmp_path: Path):
    environ = {"ANET_HOSTS": str(tmp_path / "does-not-exist")}  # reading it would fail
    assert labels(resolve_hosts(["a"], environ=environ)) == ["a"]


def test_env_hosts_file_is_ignored_with_files(tmp_path: Path):
    environ = {"ANET_HOSTS": str(tmp_path / "does-not-exist")}
    given_file = write(tmp_path / "hosts", "b\n")
    assert labels(resolve_hosts(files=[given_file], environ=environ)) == ["b"]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   \n"])
def test_empty_hosts_file_is_an_error(tmp_path: Path, text: str):
    path = write(tmp_path / "hosts", text)
    with pytest.raises(UsageError, match="hosts"):
        resolve_hosts(files=[path], environ={})


def test_empty_env_hosts_file_is_an_error(tmp_path: Path):
    path = write(tmp_path / "empty", "")
    with pytest.raises(UsageError, match="empty"):
        resolve_hosts(environ={"ANET_HOSTS": str(path)})


def test_slots_override_every_host(tmp_path: Path):
    path = write(tmp_path / "hosts", "8/c\nd\n")
    hosts = resolve_hosts(["4/a", "b", "2/:"], [path], slots=3, environ={})
    assert labels(hosts) == ["a", "b", LOCAL_LABEL, "c", "d"]
    assert [host.slots for host in hosts] == [3] * 5


def test_default_local_gets_the_slots_too():
    assert resolve_hosts(slots=6, environ={}) == [HostSpec(LOCAL, slots=6)]


@pytest.mark.parametrize("slots", [0, -1])
def test_slots_below_one_are_a_usage_error(slots: int):
    with pytest.raises(UsageError):
        resolve_hosts(["a"], slots=slots, environ={})


def test_slots_are_kept_without_override():
    assert [h.slots for h in resolve_hosts(["4/a", "b"], environ={})] == [4, None]


def test_duplicates_are_merged_keeping_first_seen_order(tmp_path: Path):
    path = write(tmp_path / "hosts", "b\na\nc\n:\n")
    hosts = resolve_hosts(["a", "b", "a", "user@a", ":", "4/:"], [path], environ={})
    assert labels(hosts) == ["a", "b", "user@a", LOCAL_LABEL, "c"]


def test_same_host_with_different_slots_is_one_machine():
    assert labels(resolve_hosts(["2/a", "5/a"], environ={})) == ["a"]


@given(st.lists(st.sampled_from(["a", "b", "u@a", "a:22", ":", "3/b", "2/:"]), max_size=15))
def test_resolved_hosts_are_unique_and_in_first_seen_order(specs: list[str]):
    hosts = labels(resolve_hosts(specs, environ={}))
    seen = [parse_spec(s).label for s in specs] or [LOCAL_LABEL]
    assert hosts == list(dict.fromkeys(seen))


def test_distinct_ipv6_hosts_are_not_merged():
    """'[::1]:22' and '[::1:22]' once shared the label '::1:22' and one machine was dropped."""
    assert len(resolve_hosts(["[::1]:22", "[::1:22]"], environ={})) == 2


# -- one end machine, one connection -----------------------------------------------------------


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What anet logs (warnings) while the test runs."""
    stream = io.StringIO()
    logs.configure(0, stream=stream)
    yield stream
    logs.configure(0)
    logging.getLogger("anet").handlers[:] = []


def test_a_repeated_host_keeps_its_largest_slot_count_and_says_so(log_lines):
    hosts = resolve_hosts(["2/a", "a", "5/a", "b", "b"], environ={})
    assert [(h.label, h.slots) for h in hosts] == [("a", 5), ("b", None)]
    assert log_lines.getvalue() == "anet: 2/a, a and 5/a name one machine: used once, as 5/a\n"


def ssh_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ssh_config"
    path.write_text(text)
    return path


def resolve(config: Path, *specs: str) -> list[tuple[str, int | None]]:
    hosts = HostArgs(specs, ssh_config=config).resolve(Environment(environ={}))
    return [(h.label, h.slots) for h in hosts]


def test_ssh_config_aliases_of_one_machine_are_one_host(tmp_path, log_lines):
    config = ssh_config(
        tmp_path,
        "Host h1 h1-alias\n  HostName 10.9.8.7\n  User bob\n"
        "Host other\n  HostName 10.9.8.7\n  User alice\n"
        "Host *\n  Port 2222\n",
    )
    got = resolve(config, "h1", "bob@10.9.8.7", "4/h1-alias", "8/bob@10.9.8.7:2222", "other")
    assert got == [("h1", 8), ("other", None)]  # alice is another login: another connection
    assert log_lines.getvalue() == (
        "anet: h1, bob@10.9.8.7, 4/h1-alias and 8/bob@10.9.8.7:2222 name one machine"
        " (bob@10.9.8.7:2222): used once, as 8/h1\n"
    )


def test_names_that_resolve_to_one_address_are_one_machine(tmp_path, log_lines):
    config = ssh_config(tmp_path, "Host *\n  User bob\n")
    got = resolve(config, "localhost:2200", "2/127.0.0.1:2200", "localhost:2201", "bob@[::1]")
    assert got == [("localhost:2200", 2), ("localhost:2201", None), ("bob@[::1]", None)]


def test_hosts_behind_different_jump_hosts_are_not_merged(tmp_path, log_lines):
    config = ssh_config(
        tmp_path,
        "Host a1 a2\n  HostName 10.0.0.5\n  ProxyJump gw-a\n"
        "Host b1\n  HostName 10.0.0.5\n  ProxyJump gw-b\n",
    )
    assert resolve(config, "a1", "a2", "b1") == [("a1", None), ("b1", None)]


def test_a_hosts_file_that_is_not_utf8(tmp_path: Path):
    path = tmp_path / "hosts"
    path.write_bytes(b"# Rechner im B\xfcro (Latin-1)\nnode1\n")
    assert labels(resolve_hosts([], [path], environ={})) == ["node1"]  # a comment: anything
    path.write_bytes(b"node1\nn\xf6de2\n")
    with pytest.raises(UsageError, match=r"hosts:2: bad host spec 'n\\xf6de2': not UTF-8$"):
        resolve_hosts([], [path], environ={})
    with pytest.raises(UsageError, match=r"^bad host spec 'n\\xf6de': not UTF-8$"):
        resolve_hosts([b"n\xf6de".decode(errors="surrogateescape")], environ={})  # argv


def test_only_names_that_may_be_another_spec_are_looked_up():
    from anet.remote.identity import _worth_resolving

    assert _worth_resolving({"node01", "node02", "node03"}) == []  # a pool costs no lookup
    assert _worth_resolving({"node01", "node02", "10.0.0.1"}) == ["node01", "node02"]
    assert _worth_resolving({"n1", "n1.example.org", "n2"}) == ["n1", "n1.example.org"]


def test_aliases_with_different_keys_are_different_ways_in(tmp_path, log_lines):
    config = ssh_config(
        tmp_path,
        "Host good\n  HostName 10.0.0.5\n  IdentityFile ~/.ssh/ok\n"
        "Host wrongkey\n  HostName 10.0.0.5\n  IdentityFile ~/.ssh/old\n"
        "Host same\n  HostName 10.0.0.5\n  IdentityFile ~/.ssh/ok\n",
    )
    assert resolve(config, "good", "wrongkey", "same") == [("good", None), ("wrongkey", None)]


# -- inside a batch system's allocation ------------------------------------------------------------


def test_no_hosts_inside_slurm_runs_here_with_one_hint(log_lines: io.StringIO):
    hosts = resolve_hosts(environ={"SLURM_JOB_NODELIST": "node[01-04]"})
    assert hosts == [HostSpec(LOCAL)]
    assert log_lines.getvalue() == (
        "anet: inside Slurm allocation node[01-04]: running on this machine only;"
        " -H slurm uses it\n"
    )


def test_no_hint_when_hosts_are_given_or_outside_an_allocation(log_lines: io.StringIO):
    resolve_hosts(["h1"], environ={"SLURM_JOB_NODELIST": "node[01-04]"})
    resolve_hosts(environ={})
    assert log_lines.getvalue() == ""
