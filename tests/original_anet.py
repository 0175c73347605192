"""The original ANet's own lines (Wout12345/anet, anet.py and example.py), for tests that hold
anet to what the original did with a batch and what its consumers expect.

Kept as text, verbatim (tabs and all), and run as they are: a test then compares anet with the
original's code itself, not with a retelling of it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ORIGINAL_READER = """\
with open(sys.argv[1], "r") as f:
\tcommands = list(filter(lambda element : element != "", f.read().split("\\n")))
"""
"""How the original reads a batch (anet.py, main()): text mode, so universal newlines (a CRLF
and a lone CR end a line too), then every piece that is not the empty string is a request,
and its id is its index."""


def original_commands(data: bytes) -> list[bytes]:
    """The commands the original ANet would number 0, 1, ... for a batch file holding `data`,
    as the UTF-8 bytes it would send: its own lines of code, run on a real file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "batch_file.txt")
        path.write_bytes(data)
        scope: dict[str, Any] = {"sys": SimpleNamespace(argv=["anet.py", str(path)])}
        exec(ORIGINAL_READER, scope)
    return [command.encode("utf-8") for command in scope["commands"]]


CONSUMER = """\
import struct
import sys

# The original's example.py, reading stdin instead of its own Popen of anet: jobs is the
# number of requests; each record is a uint32 LE id, a uint32 LE length, that many bytes.
jobs = int(sys.argv[1])
stdout = sys.stdin.buffer
finished = [False]*jobs
while False in finished:
\trequest_id = struct.unpack("I", stdout.read(4))[0]
\tlength = struct.unpack("I", stdout.read(4))[0]
\tresponse = stdout.read(length).decode()
\tfinished[request_id] = True
\tprint("Finished request %s, finished %s/%s requests"%(request_id, finished.count(True), jobs))
\tif length > 0:
\t\tprint("\\nFOUND SOLUTION: %s\\n"%response)
"""
"""A consumer in the original's style: its example.py's loop, unchanged but for where the
stream comes from. It crashes (struct.error) if the stream ends before every id arrived."""
