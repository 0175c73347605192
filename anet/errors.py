"""One root for every error anet raises, so callers can catch them all.

A user mistake (missing file, bad host spec) becomes one line on stderr and exit status 255;
a failed *job* is never an exception, it is a result; a failed *host* is an event.
"""

from __future__ import annotations

import signal


class AnetError(Exception):
    """Root of anet's errors; its message is meant for the user, one line."""


class UsageError(AnetError):
    """The user asked for something that cannot work (bad argument, missing file)."""


class HostError(AnetError):
    """One end machine cannot be used; other hosts carry on.

    `host` names the machine as the user named it, so the message reads `host: reason`.
    `permanent` errors (a refused key, an unknown host key, no python3) need the user to act:
    retrying cannot help, so the host is given up. Others (refused, timed out, lost) are retried.
    """

    def __init__(self, host: str, reason: str, *, permanent: bool = False) -> None:
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason
        self.permanent = permanent


def protocol_error(host: str, what: str) -> HostError:
    """The host broke the protocol: it is given up for this run, never reconnected.

    SSH already guarantees that bytes arrive as they were sent, so a frame that breaks the
    protocol is no accident of the network: the dispatcher there is broken or hostile, and a
    new connection would only give it more work and another chance to lie. Its running attempts
    go back to the queue like any lost host's; nothing it said is a result.
    """
    return HostError(host, f"protocol error: {what}", permanent=True)


class NoHostError(AnetError):
    """No host at all could run the batch."""


class ResultFormatError(AnetError):
    """A results stream is corrupt or not in the format it claims."""


class Stopped(AnetError):
    """A signal asked anet to stop (TERM, HUP): it ends the run as Ctrl-C does."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; running jobs were stopped")
