"""Where the master's CPU goes: a sampling profile on CPU time, not wall time.

    python3 -m bench.cpuprof OUT.txt -- --ssh-config CFG -S 4/host1 ... --batch FILE

Runs bench.probe in this process with a SIGPROF timer (`ITIMER_PROF` counts the process's
user + system time), so a sample lands only where the master spent CPU. py-spy samples wall
time: on a busy 2-core box a process waiting to run again after waking an sshd is charged to
the socket write it just made (`SSHConnection._send` took 40% of py-spy's samples and 7% of
these). cProfile counts CPU but adds a fixed cost per Python call, which inflates the
bookkeeping made of many small calls (14x for the engine alone: 271 against 19 us a job).
Writes collapsed stacks (`frame;frame;... count`, py-spy's raw format, so
bench.master_profile.summarise reads them); the kernel's tick (4 ms here) bounds the rate.
"""

from __future__ import annotations

import runpy
import signal
import sys
from collections import Counter
from types import FrameType

INTERVAL = 0.001


def main() -> None:
    out, _, probe_args = sys.argv[1], sys.argv[2], sys.argv[3:]
    stacks: Counter[str] = Counter()

    def sample(signum: int, frame: FrameType | None) -> None:
        names = []
        while frame is not None:
            code = frame.f_code
            names.append(f"{code.co_qualname} ({code.co_filename}:{frame.f_lineno})")
            frame = frame.f_back
        stacks[";".join(reversed(names))] += 1

    signal.signal(signal.SIGPROF, sample)
    signal.setitimer(signal.ITIMER_PROF, INTERVAL, INTERVAL)
    sys.argv = ["bench.probe", *probe_args]
    try:
        runpy.run_module("bench.probe", run_name="__main__")
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        with open(out, "w") as stream:
            stream.writelines(f"{stack} {count}\n" for stack, count in stacks.items())


if __name__ == "__main__":
    main()
