"""Hosts from where they already live: Slurm's hostlists and CPU counts, PBS node files,
Ansible inventories (INI and YAML), and `-H` choosing among them and plain hosts files.

Pure parsing: no host is contacted. The CLI against real sshd hosts is in test_cli_sources.py.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anet.errors import UsageError
from anet.remote.allocations import pbs_hosts, slurm_hosts
from anet.remote.hostlist import expand_cpus_per_node, expand_hostlist, fold_hostlist
from anet.remote.hosts import LOCAL, HostSpec, read_source, resolve_hosts
from anet.remote.inventory import expand_ansible_range

# -- Slurm's hostlist syntax -------------------------------------------------------------------


HOSTLISTS = [
    # The examples of Slurm's own documentation (sbatch(1), scontrol(1), slurm.conf(5)):
    ("lx[15,18,32-33]", ["lx15", "lx18", "lx32", "lx33"]),
    ("linux[0-3]", ["linux0", "linux1", "linux2", "linux3"]),
    ("tux[0-2,4]", ["tux0", "tux1", "tux2", "tux4"]),
    ("linux[00-02]", ["linux00", "linux01", "linux02"]),
    ("rack[0-1]_blade[0-1]", ["rack0_blade0", "rack0_blade1", "rack1_blade0", "rack1_blade1"]),
    # and the forms the issue names:
    ("node[01-03,07],gpu[1-2]", ["node01", "node02", "node03", "node07", "gpu1", "gpu2"]),
    ("rack[1-2]-node[01-02]", ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]),
    ("node[098-101]", ["node098", "node099", "node100", "node101"]),
    ("single", ["single"]),
    ("a,b,c[1-2]", ["a", "b", "c1", "c2"]),
    ("a b", ["a", "b"]),
    ("n[1-2].example.org,m", ["n1.example.org", "n2.example.org", "m"]),
]


@pytest.mark.parametrize(("nodelist", "hosts"), HOSTLISTS)
def test_slurm_hostlists_expand_as_slurm_lists_them(nodelist: str, hosts: list[str]):
    assert expand_hostlist(nodelist) == hosts


@pytest.fixture(scope="module")
def scontrol(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., list[str]]:
    """Slurm's own `scontrol show ...`, with the least configuration it starts with (it reads
    one even to expand a hostlist; no Slurm daemon is asked)."""
    conf = tmp_path_factory.mktemp("slurm") / "slurm.conf"
    conf.write_text("ClusterName=anet\nSlurmctldHost=localhost\nNodeName=localhost\n")

    def show(what: str, text: str) -> list[str]:
        done = subprocess.run(
            ["scontrol", "show", what, text], capture_output=True, text=True, timeout=30,
            env={**os.environ, "SLURM_CONF": str(conf)}, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    return show


SLURM_REFUSES = {"n[1-2].example.org,m"}
"""Lists anet reads and Slurm does not (22.05: "Invalid hostlist", a name goes on after its
brackets): anet folds a domain's hosts so for --onall's blocks, and reads back what it shows."""


@pytest.mark.slurm
@pytest.mark.parametrize(("nodelist", "hosts"), [h for h in HOSTLISTS if h[0] not in SLURM_REFUSES])
def test_hostlists_expand_as_scontrol_expands_them(scontrol, nodelist: str, hosts: list[str]):
    assert expand_hostlist(nodelist) == scontrol("hostnames", nodelist.replace(" ", ","))


@pytest.mark.slurm
@pytest.mark.parametrize(
    "names",
    [
        ["node01", "node02", "node03", "node07", "gpu1", "gpu2"],
        ["host4", "host1", "host2", "n9", "n10", "n11", "n01", "n10"],
        ["rack1-n01", "rack1-n02", "rack2-n01", "node098", "node099", "node100", "local"],
    ],
)
def test_folded_lists_read_back_in_slurm_as_their_names(scontrol, names: list[str]):
    """What --onall's blocks show is a hostlist Slurm takes: scontrol expands it back."""
    folded = ",".join(fold_hostlist(names))
    assert sorted(scontrol("hostnames", folded)) == sorted(set(names))


@pytest.mark.parametrize(
    ("nodelist", "says"),
    [
        ("node[01-03", "brackets do not pair up"),
        ("node01-03]", "brackets do not pair up"),
        ("node[[1-2]]", "brackets do not pair up"),
        ("node[3-1]", "counts backwards"),
        ("node[a-c]", "is no name[ranges]"),
        ("node[1-99999999]", "over 65536 hosts"),
    ],
)
def test_a_bad_hostlist_is_one_clear_error(nodelist: str, says: str):
    with pytest.raises(UsageError) as caught:
        expand_hostlist(nodelist)
    assert repr(nodelist) in str(caught.value) and says in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("names", "folded"),
    [
        (["node01", "node02", "node03", "node07", "gpu1", "gpu2"], ["node[01-03,07]", "gpu[1-2]"]),
        (["host4", "host1", "host2"], ["host[1-2,4]"]),
        (["n9", "n10", "n11"], ["n[9-11]"]),  # unpadded: any width
        (["n01", "n10", "n9"], ["n[01,10]", "n9"]),  # 10 fits the width of 01, 9 does not
        (["rack1-n01", "rack1-n02", "rack2-n01"], ["rack1-n[01-02]", "rack2-n01"]),
        (["local", "[::1]:22", "a,b", "n1"], ["local", "[::1]:22", "a,b", "n1"]),
        (["n1", "n1"], ["n1"]),
    ],
)
def test_fold_hostlist(names: list[str], folded: list[str]):
    assert fold_hostlist(names) == folded


@given(st.lists(st.text("ab-.@:0123456789", min_size=1, max_size=6), max_size=30))
def test_a_folded_list_expands_to_its_names(names: list[str]):
    expanded = expand_hostlist(", ".join(fold_hostlist(names)))
    assert sorted(expanded) == sorted(set(names))


@pytest.mark.parametrize(
    ("text", "counts"),
    [
        ("36(x2),72", [36, 36, 72]),
        ("72", [72]),
        ("2(x3)", [2, 2, 2]),
        ("4,8(x2),1", [4, 8, 8, 1]),
    ],
)
def test_cpus_per_node_run_lengths(text: str, counts: list[int]):
    assert expand_cpus_per_node(text) == counts


@pytest.mark.parametrize("text", ["", "36(x)", "x2", "36(2)", "3,,4"])
def test_bad_cpus_per_node_is_a_usage_error(text: str):
    with pytest.raises(UsageError, match="bad CPU counts"):
        expand_cpus_per_node(text)


def test_slurm_hosts_take_their_slots_from_the_cpu_counts():
    environ = {"SLURM_JOB_NODELIST": "node[01-02],big", "SLURM_JOB_CPUS_PER_NODE": "36(x2),72"}
    assert read_source("slurm", environ) == [
        HostSpec("node01", slots=36),
        HostSpec("node02", slots=36),
        HostSpec("big", slots=72),
    ]


def test_slurm_hosts_without_cpu_counts_use_their_cores():
    assert slurm_hosts({"SLURM_JOB_NODELIST": "n[1-2]"}) == [("n1", None), ("n2", None)]


def test_slurm_counts_that_do_not_match_the_nodes_are_refused():
    environ = {"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_JOB_CPUS_PER_NODE": "4(x2)"}
    with pytest.raises(UsageError, match=r"counts 2 nodes.*names 3"):
        slurm_hosts(environ)


def test_slurm_outside_an_allocation_is_one_clear_error():
    with pytest.raises(UsageError, match=r"^-H slurm: not inside a Slurm allocation"):
        resolve_hosts(files=["slurm"], environ={})


def test_a_bad_slurm_nodelist_names_the_source():
    with pytest.raises(UsageError, match=r"^-H slurm: bad host list 'n\[1-2'"):
        read_source("slurm", {"SLURM_JOB_NODELIST": "n[1-2"})


# -- PBS/Torque --------------------------------------------------------------------------------


def test_pbs_nodefile_lines_are_slots_in_first_seen_order(tmp_path: Path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n2\nn2\nn1\n\nn2\nn3\nn1\n")
    assert pbs_hosts({"PBS_NODEFILE": str(nodefile)}) == [("n2", 3), ("n1", 2), ("n3", 1)]
    assert read_source("pbs", {"PBS_NODEFILE": str(nodefile)})[0] == HostSpec("n2", slots=3)


def test_pbs_outside_a_job_and_a_missing_nodefile_are_clear_errors(tmp_path: Path):
    with pytest.raises(UsageError, match=r"^-H pbs: not inside a PBS job"):
        read_source("pbs", {})
    with pytest.raises(UsageError, match=r"^-H pbs: cannot read PBS_NODEFILE '.*gone'"):
        read_source("pbs", {"PBS_NODEFILE": str(tmp_path / "gone")})


def test_a_file_named_like_a_source_is_read_as_a_file(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("slurm").write_text("filehost\n")
    assert read_source("./slurm", {}) == [HostSpec("filehost")]
    assert read_source(Path("slurm"), {}) == [HostSpec("filehost")]


# -- Ansible inventories -----------------------------------------------------------------------

INI = """\
# a comment
loose.example.org

[web]
web[01:03].example.org ansible_user=deploy
odd ansible_host=10.0.0.9 ansible_port=2222 anet_slots=8

[db]
db-[a:b]:5309
localhost ansible_connection=local

[prod:children]
web
db

[prod:vars]
ansible_user=ops

[all:vars]
ansible_port=22
"""

YAML = """\
all:
  hosts:
    loose.example.org:
  vars:
    ansible_port: 22
  children:
    prod:
      vars:
        ansible_user: ops
      children:
        web:
          hosts:
            web[01:03].example.org:
              ansible_user: deploy
            odd:
              ansible_host: 10.0.0.9
              ansible_port: 2222
              anet_slots: 8
        db:
          hosts:
            db-[a:b]:5309:
            localhost:
              ansible_connection: local
"""

EVERY = [
    HostSpec("loose.example.org", port=22),
    HostSpec("web01.example.org", "deploy", 22),
    HostSpec("web02.example.org", "deploy", 22),
    HostSpec("web03.example.org", "deploy", 22),
    HostSpec("10.0.0.9", "ops", 2222, slots=8),
    HostSpec("db-a", "ops", 5309),
    HostSpec("db-b", "ops", 5309),
    HostSpec(LOCAL),
]


@pytest.fixture(params=[("inventory.ini", INI), ("inventory.yml", YAML), ("hosts", INI)])
def inventory(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The same inventory as INI, as YAML, and as INI without the extension (told by its
    `[group]` header)."""
    name, text = request.param
    path = tmp_path / name
    path.write_text(text)
    return path


def test_an_inventory_gives_every_host_with_its_vars(inventory: Path):
    assert read_source(str(inventory), {}) == EVERY


def test_a_group_gives_its_hosts_and_its_childrens(inventory: Path):
    assert read_source(f"{inventory}:prod", {}) == EVERY[1:]
    assert read_source(f"{inventory}:db", {}) == EVERY[5:]
    assert read_source(f"{inventory}:all", {}) == EVERY


def test_a_child_groups_vars_beat_its_parents(tmp_path: Path):
    path = tmp_path / "inv.ini"
    path.write_text(
        "[top:children]\nmid\n[mid:children]\nleaf\n[leaf]\nh\n"
        "[top:vars]\nansible_user=top\nansible_port=1\n[leaf:vars]\nansible_user=leaf\n"
    )
    assert read_source(str(path), {}) == [HostSpec("h", "leaf", 1)]


def test_group_vars_may_have_blanks_around_the_equals_and_quotes(tmp_path: Path):
    """Ansible reads a `[g:vars]` line as `key = value`, the value maybe quoted."""
    path = tmp_path / "inv.ini"
    path.write_text("[g]\nh\n[g:vars]\nansible_user = 'ops'\nansible_port= 2200\n")
    assert read_source(str(path), {}) == [HostSpec("h", "ops", 2200)]


def test_yaml_hosts_of_all_alone_are_ungrouped(tmp_path: Path):
    path = tmp_path / "inv.yml"
    path.write_text("all:\n  hosts:\n    lone:\n  children:\n    g:\n      hosts:\n        h:\n")
    assert read_source(f"{path}:ungrouped", {}) == [HostSpec("lone")]


def test_a_missing_group_is_one_clear_error(inventory: Path):
    with pytest.raises(UsageError, match=r"has no group 'nope' \(its groups: all, db, "):
        read_source(f"{inventory}:nope", {})


def test_the_guides_inventory_and_its_missing_group_error(tmp_path: Path, monkeypatch):
    guide = (Path(__file__).resolve().parent.parent / "docs" / "guide.md").read_text()
    lines = guide.split("    # inventory.ini\n", 1)[1].splitlines()
    block = itertools.takewhile(lambda line: not line or line.startswith("    "), lines)
    monkeypatch.chdir(tmp_path)
    Path("inventory.ini").write_text("\n".join(line.removeprefix("    ") for line in block))
    assert read_source("inventory.ini:prod", {})[3] == HostSpec("10.0.0.9", "deploy", 2222, 8)
    with pytest.raises(UsageError) as caught:
        read_source("inventory.ini:wbe", {})
    assert f"    anet: {caught.value}\n" in guide


def test_a_group_of_a_plain_hosts_file_is_refused(tmp_path: Path):
    path = tmp_path / "hosts"
    path.write_text("h1\n")
    with pytest.raises(UsageError, match="is a hosts file, not an Ansible inventory"):
        read_source(f"{path}:web", {})


def test_a_hosts_file_starting_with_an_ipv6_address_is_no_inventory(tmp_path: Path):
    path = tmp_path / "hosts"
    path.write_text("[::1]\nh2\n")
    assert read_source(str(path), {}) == [HostSpec("::1"), HostSpec("h2")]


def test_a_missing_inventory_is_named(tmp_path: Path):
    with pytest.raises(UsageError, match=r"cannot read hosts file '.*gone\.yml'"):
        read_source(f"{tmp_path / 'gone.yml'}:web", {})


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("i.yml", "all: [1, 2]\n", "group 'all': expected a mapping, found list"),
        ("i.yml", "all:\n  hosts: {a: 1\n", r"i\.yml:\d+: not a YAML inventory"),
        ("i.ini", "[web]\nh ansible_user\n", r"i\.ini:2: expected key=value"),
        ("i.ini", "[web]\nh ansible_port=99999\n", "host 'h': bad ansible_port '99999'"),
        ("i.ini", "[web]\nh[3:1]\n", "bad host range 'h\\[3:1\\]': it counts backwards"),
        ("i.ini", "[web\nh\n", r"i\.ini:1: bad section header"),
    ],
)
def test_a_broken_inventory_is_one_clear_error(tmp_path: Path, name: str, text: str, says: str):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UsageError, match=says) as caught:
        read_source(str(path), {})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("pattern", "hosts"),
    [
        ("www[01:03].example.com", ["www01.example.com", "www02.example.com", "www03.example.com"]),
        ("db-[a:c]", ["db-a", "db-b", "db-c"]),
        ("n[0:10:5]", ["n0", "n5", "n10"]),
        ("r[1:2]n[1:2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("plain", ["plain"]),
    ],
)
def test_ansible_ranges(pattern: str, hosts: list[str]):
    assert expand_ansible_range(pattern, "inv") == hosts


def test_reading_an_ini_inventory_does_not_import_yaml(tmp_path: Path):
    """The YAML parser is paid for only by a YAML inventory: anet's start-up never loads it."""
    import subprocess
    import sys

    path = tmp_path / "inv.ini"
    path.write_text(INI)
    code = (
        "import sys; from anet.remote.hosts import read_source;"
        f" read_source({str(path)!r}, {{}}); print('yaml' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "False\n"
