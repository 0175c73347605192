"""The pool's hosts beyond those `anet up` gives: added with `anet pool add`, let go with
`anet pool drain`. Kept on disk (`hosts.json` in the pool's state directory, written whole at
each change), so the next `anet up` of that name, after `anet down` or after a pool killed
with -9, starts with the hosts the pool had, not only those its command line names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..logs import get_logger
from ..remote.hosts import HostSpec, parse_spec
from .run import write_atomically

log = get_logger()


@dataclass(slots=True)
class HostChanges:
    """What `pool add` and `pool drain` changed, in the order they did it."""

    path: Path
    added: list[str] = field(default_factory=list)  # specs, as `pool add` took them
    drained: list[str] = field(default_factory=list)  # labels of hosts `anet up` gave

    @classmethod
    def load(cls, path: Path) -> HostChanges:
        """The changes kept at `path`; none when there is no file (a broken one is said in the
        pool's log, and the pool starts with its command line's hosts)."""
        try:
            kept = json.loads(path.read_bytes())
            added, drained = kept["added"], kept["drained"]
            if not all(isinstance(x, str) for x in [*added, *drained]):
                raise ValueError("not lists of strings")
            for spec in added:
                parse_spec(spec)
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError, KeyError, TypeError, UsageError) as exc:
            log.warning(f"the hosts kept in {path} are ignored: {exc}")
            return cls(path)
        return cls(path, list(added), list(drained))

    def apply(self, hosts: Sequence[HostSpec]) -> list[HostSpec]:
        """`anet up`'s hosts, less those drained since, then those added (each host once)."""
        kept = [spec for spec in hosts if spec.label not in self.drained]
        labels = {spec.label for spec in kept}
        for spec in map(parse_spec, self.added):
            if spec.label not in labels:
                kept.append(spec)
                labels.add(spec.label)
        return kept

    def add(self, spec: str) -> None:
        label = parse_spec(spec).label
        self.drained = [each for each in self.drained if each != label]
        self.added = [each for each in self.added if parse_spec(each).label != label] + [spec]
        self._save()

    def drain(self, label: str) -> None:
        before = len(self.added)
        self.added = [each for each in self.added if parse_spec(each).label != label]
        if len(self.added) == before and label not in self.drained:  # one `anet up` gave
            self.drained.append(label)
        self._save()

    def _save(self) -> None:
        try:
            data = json.dumps({"added": self.added, "drained": self.drained}).encode()
            write_atomically(self.path, data)
        except OSError as exc:  # the pool goes on; only its next start would not know
            log.warning(f"the pool's hosts cannot be kept in {self.path}: {exc.strerror}")
