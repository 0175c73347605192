"""Keep freed heap memory for the next big buffer, in a process that moves bulk bytes.

A job printing a lot costs a process that relays it a 256 KiB `bytes` per chunk (a read, a
frame), freed as soon as it is written on. glibc's malloc gives such a block its own mmap,
or, once its threshold has adapted, hands the top of the heap back to the kernel when the
block is freed (the trim threshold follows the mmap one): either way the next chunk
page-faults 64 fresh, zeroed pages in. Measured on the dispatcher relaying 1 GB, those faults
were a fifth of its CPU. `keep_heap()` raises both thresholds once a process knows it moves
bulk bytes: chunks come from the heap and go back to it, at most KEEP_HEAP bytes of free
heap are kept (never more memory than the process held at its peak).

Linux (glibc) only, through ctypes (stdlib); anywhere else, or without ctypes, it does
nothing but leave the speed as it was. Python 3.8+.
"""

from __future__ import annotations

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_AT = 4 << 20
"""Blocks from this size on still get their own mapping (none of a relay's are this big)."""
KEEP_HEAP = 64 << 20
"""Free bytes at the top of the heap kept rather than given back to the kernel."""

_kept = False


def keep_heap() -> None:
    """Once per process: freed chunks stay in the heap for the next (see the module doc)."""
    global _kept
    if _kept:
        return
    _kept = True
    try:
        import ctypes  # here: 5 ms of imports only for a process that moves bulk bytes

        mallopt = ctypes.CDLL(None).mallopt
        mallopt(M_MMAP_THRESHOLD, MMAP_AT)
        mallopt(M_TRIM_THRESHOLD, KEEP_HEAP)
    except (ImportError, OSError, AttributeError):  # no ctypes, no C library, not glibc
        pass
