"""anet: run a batch of shell commands on every core of the machines you can reach over SSH.

The library comes first and the `anet` command is a thin layer over it:

    import anet

    async with anet.Cluster(["node1", "8/bob@node2:2222"]) as cluster:
        async for result in cluster.run(["echo 1", "echo 2"]):
            ...

`anet.Machines` does the housekeeping of a pool (find, killall, check, onall);
`anet.results.read(stream)` reads anet's output streams back into `JobResult` records.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

_WHERE = {
    "Cluster": "api", "HostState": "api", "Polite": "api", "RunOptions": "api",
    "RunPlan": "api", "RunPolicy": "api",
    "Job": "core.batch", "read_batch": "core.batch", "FilePart": "core.batch",
    "HaltPolicy": "core.halt",
    "JobResult": "core.record", "SpooledResult": "core.record",
    "OutputCap": "core.spool", "Spool": "core.spool",
    "AnetError": "errors", "HostError": "errors", "NoHostError": "errors",
    "ResultFormatError": "errors", "UsageError": "errors",
    "HostCheck": "housekeeping", "HostKills": "housekeeping", "HostOutput": "housekeeping",
    "HostProcesses": "housekeeping", "Machines": "housekeeping",
    "Pool": "pool.client", "PoolDown": "pool.client",
    "SshOptions": "remote.connect",
    "HostSpec": "remote.hosts", "parse_spec": "remote.hosts", "resolve_hosts": "remote.hosts",
    "Journal": "streams.journal",
    "encoder_for": "streams.sinks",
}  # fmt: skip
"""Where each public name lives. They are loaded on first use (PEP 562), not here: `anet`
is imported by every `anet` command, and `anet --version` or a run on this machine alone must
not pay for asyncssh, rich or the report (`python3 -X importtime -m anet --version`)."""

if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from . import results
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


def __getattr__(name: str) -> Any:
    """A public name, imported the first time it is asked for, then kept in the module."""
    if name == "results":
        value: Any = importlib.import_module(".results", __name__)
    elif name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'anet' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
