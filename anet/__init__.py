"""anet: run a batch of shell commands on every core of the machines you can reach over SSH.

The library comes first and the `anet` command is a thin layer over it:

    import anet

    async with anet.Cluster(["node1", "8/bob@node2:2222"]) as cluster:
        async for result in cluster.run(["echo 1", "echo 2"]):
            ...

`anet.Pool()` runs the same way on a resident master (`anet up`); `anet.Machines` does the
housekeeping of a pool (find, killall, check, onall);
`anet.results.read(stream)` reads anet's output streams back into `JobResult` records.
"""

from __future__ import annotations

from . import results
from ._version import __version__
from .api import Cluster, HostState, Polite, RunOptions, RunPlan, RunPolicy
from .core.batch import FilePart, Job, read_batch
from .core.halt import HaltPolicy
from .core.record import JobResult, SpooledResult
from .core.spool import OutputCap, Spool
from .errors import AnetError, HostError, NoHostError, ResultFormatError, UsageError
from .housekeeping import HostCheck, HostKills, HostOutput, HostProcesses, Machines
from .pool.client import Pool, PoolDown
from .remote.connect import SshOptions
from .remote.hosts import HostSpec, parse_spec, resolve_hosts
from .streams.journal import Journal
from .streams.sinks import encoder_for

__all__ = [
    "AnetError",
    "Cluster",
    "FilePart",
    "HaltPolicy",
    "HostCheck",
    "HostError",
    "HostKills",
    "HostOutput",
    "HostProcesses",
    "HostSpec",
    "HostState",
    "Job",
    "JobResult",
    "Journal",
    "Machines",
    "NoHostError",
    "OutputCap",
    "Polite",
    "Pool",
    "PoolDown",
    "ResultFormatError",
    "RunOptions",
    "RunPlan",
    "RunPolicy",
    "Spool",
    "SpooledResult",
    "SshOptions",
    "UsageError",
    "__version__",
    "encoder_for",
    "parse_spec",
    "read_batch",
    "resolve_hosts",
    "results",
]
