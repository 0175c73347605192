"""`--halt`: when to give up on a batch that is failing, as GNU parallel's `--halt` does.

    --halt now,fail=3     kill the running jobs and stop once 3 jobs have failed
    --halt soon,fail=10%  start no new job once 10% of the batch failed; let running ones end
    --halt never          (the default) run every job whatever happens

A percentage counts against the whole batch, whose size the caller knows from the batch file.
Pure: the CLI feeds it counts and acts on the answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from ..errors import UsageError


class Halt(Enum):
    NOW = "now"
    SOON = "soon"


@dataclass(frozen=True, slots=True)
class HaltPolicy:
    when: Halt | None = None
    failures: float = 0.0
    percent: bool = False

    @classmethod
    def parse(cls, text: str | None) -> HaltPolicy:
        if text is None or text == "never":
            return cls()
        when, _, condition = text.partition(",")
        key, _, value = condition.partition("=")
        if when not in ("now", "soon") or key != "fail" or not value:
            raise UsageError(f"--halt takes never, now,fail=N, soon,fail=N or N%, not {text!r}")
        percent = value.endswith("%")
        try:
            number = float(value.removesuffix("%"))
        except ValueError:
            raise UsageError(f"--halt: {value!r} is not a number") from None
        if not math.isfinite(number) or number <= 0 or (percent and number > 100):
            raise UsageError(f"--halt: fail={value} is out of range")
        return cls(Halt(when), number, percent)

    @property
    def text(self) -> str:
        """As `--halt` takes it: `parse(policy.text) == policy` (for a pool, which parses it)."""
        if self.when is None:
            return "never"
        return f"{self.when.value},fail={self.failures:g}{'%' if self.percent else ''}"

    @property
    def needs_total(self) -> bool:
        return self.percent

    def check(self, failed: int, total: int | None = None) -> Halt | None:
        """What to do now that `failed` jobs of a `total`-job batch have failed for good."""
        if self.when is None or failed == 0:
            return None
        if self.percent:
            reached = total is not None and failed * 100 >= self.failures * total
        else:
            reached = failed >= self.failures
        return self.when if reached else None
