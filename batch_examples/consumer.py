"""Summarise an anet result stream: one line per job, then totals.

    anet batch_examples/primes.txt | python3 batch_examples/consumer.py

Any output format is read (auto-detected) with the consumer library, anet.results, which must be
importable (run it with the Python anet is installed in, .venv/bin/python in the README, or with
PYTHONPATH=. from the repository). Exit status: 0 if every job succeeded, 1 if some failed, 2 if
the stream is corrupt.
"""

import sys

import anet.results
from anet import JobResult
from anet.errors import ResultFormatError


def status(rec: JobResult) -> str:
    if rec.ok:
        return "ok"
    if rec.error is not None:
        return f"error: {rec.error}"
    return f"signal {rec.signal}" if rec.signal is not None else f"exit {rec.exit_code}"


def main() -> int:
    jobs = failed = out_bytes = 0
    try:
        for rec in anet.results.read(sys.stdin.buffer):
            jobs += 1
            failed += not rec.ok
            out_bytes += len(rec.stdout)
            where = f" on {rec.host}" if rec.host else ""  # the original format names none
            print(f"job {rec.id}{where}: {status(rec)}, {len(rec.stdout)} bytes")
    except ResultFormatError as exc:
        print(f"consumer.py: {exc}", file=sys.stderr)
        return 2
    print(f"{jobs} jobs, {failed} failed, {out_bytes} bytes of output")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
