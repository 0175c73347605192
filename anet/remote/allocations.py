"""The machines a batch system gave the job anet runs in: `-H slurm` and `-H pbs`.

Inside an allocation the hosts and their cores are already known, in the environment the batch
system set; asking the user to copy them into a hosts file only invites a stale copy. Each
source gives (host name, job slots) in the allocation's order; hosts.py makes specs of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from ..errors import UsageError
from .hostlist import expand_cpus_per_node, expand_hostlist

SLURM = "slurm"
PBS = "pbs"
SOURCES = (SLURM, PBS)
"""The words `-H` takes as a batch system rather than a file (`-H ./slurm` is the file)."""


def allocation_hosts(source: str, environ: Mapping[str, str]) -> list[tuple[str, int | None]]:
    """The (host, slots) of `source`, one of `SOURCES`."""
    return slurm_hosts(environ) if source == SLURM else pbs_hosts(environ)


def slurm_hosts(environ: Mapping[str, str]) -> list[tuple[str, int | None]]:
    """`SLURM_JOB_NODELIST`'s hosts, with `SLURM_JOB_CPUS_PER_NODE`'s counts as their slots
    (without it, each host's own cores, as for any host)."""
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    if not nodelist:
        raise UsageError("-H slurm: not inside a Slurm allocation (SLURM_JOB_NODELIST is not set)")
    try:
        hosts = expand_hostlist(nodelist)
        cpus = environ.get("SLURM_JOB_CPUS_PER_NODE")
        counts: list[int | None] = list(expand_cpus_per_node(cpus)) if cpus else []
    except UsageError as exc:
        raise UsageError(f"-H slurm: {exc}") from None
    if counts and len(counts) != len(hosts):
        raise UsageError(
            f"-H slurm: SLURM_JOB_CPUS_PER_NODE ({cpus}) counts {len(counts)} nodes,"
            f" SLURM_JOB_NODELIST ({nodelist}) names {len(hosts)}"
        )
    return list(zip(hosts, counts or [None] * len(hosts), strict=True))


def pbs_hosts(environ: Mapping[str, str]) -> list[tuple[str, int | None]]:
    """`$PBS_NODEFILE`'s hosts: one line per slot, so a host's lines are its slots; in the order
    each host first appears."""
    path = environ.get("PBS_NODEFILE")
    if not path:
        raise UsageError("-H pbs: not inside a PBS job (PBS_NODEFILE is not set)")
    try:
        text = Path(path).read_text("utf-8", "surrogateescape")
    except OSError as exc:
        raise UsageError(f"-H pbs: cannot read PBS_NODEFILE {path!r}: {exc.strerror}") from None
    slots = Counter(line.strip() for line in text.splitlines() if line.strip())
    return list(slots.items())


def allocation_hint(environ: Mapping[str, str]) -> str | None:
    """A line for a run that names no hosts inside an allocation: it runs here only, and the
    user likely meant the allocation."""
    nodelist = environ.get("SLURM_JOB_NODELIST")
    if nodelist:
        return f"inside Slurm allocation {nodelist}: running on this machine only; -H slurm uses it"
    if environ.get("PBS_NODEFILE"):
        return "inside a PBS job: running on this machine only; -H pbs uses its nodes"
    return None
