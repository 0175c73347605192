"""`python rss_master.py RSS_FILE ARGS...` runs `anet ARGS...` as `python -m anet` does, then
writes the master's peak RSS (KiB: VmHWM of /proc/self/status) to RSS_FILE, however it ends.
Not getrusage: its ru_maxrss survives execve, so a child of a big pytest process would report
the parent's size at the fork. With
$ANET_TEST_ANET_MAX set, the anet format's stdout limit is that many bytes (a >4 GiB output
costs minutes; the rule does not depend on the number); with $ANET_TEST_RECORD_MAX set, the
msgpack record and JSON line limits are (so a result past them is written in parts)."""

from __future__ import annotations

import atexit
import os
import sys

from anet.launch import main
from anet.streams import sinks

if __name__ == "__main__":
    rss_file = sys.argv.pop(1)
    if "ANET_TEST_ANET_MAX" in os.environ:
        sinks.ANET_MAX_STDOUT = int(os.environ["ANET_TEST_ANET_MAX"])
    if "ANET_TEST_RECORD_MAX" in os.environ:
        sinks.MAX_RECORD = sinks.MAX_BIG_RECORD = int(os.environ["ANET_TEST_RECORD_MAX"])

    def write_peak() -> None:  # at exit, however it comes: anet's own skips `finally`
        with open("/proc/self/status") as status:
            (peak,) = (line.split()[1] for line in status if line.startswith("VmHWM:"))
        with open(rss_file, "w") as out:
            out.write(f"{peak}\n")

    atexit.register(write_peak)
    main()
