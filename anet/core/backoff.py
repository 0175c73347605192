"""Reconnection delays: exponential backoff with full jitter, per host.

Full jitter (a uniform draw between 0 and the exponential cap) spreads the retries of many hosts
behind one jump host or one flaky switch, so they do not hammer sshd in lockstep: sshd drops
handshakes beyond MaxStartups, and OpenSSH >= 9.8 penalises sources that retry too eagerly.
Pure: the random source is injected, so tests can pin the sequence.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delay before the next try: uniform in [0, min(cap, initial * factor**failures)]."""

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def ceiling(self) -> float:
        """The largest delay the next draw may take."""
        return min(self.cap, self.initial * self.factor**self.failures)

    def next_delay(self) -> float:
        """Draw the delay before the next try, and count this failure."""
        delay = self.rng.uniform(0.0, self.ceiling())
        self.failures = min(self.failures + 1, 64)  # factor**64 already exceeds any cap
        return delay

    def reset(self) -> None:
        """A try succeeded: the next failure starts from `initial` again."""
        self.failures = 0
