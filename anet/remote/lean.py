"""asyncssh's per-packet work that a run of many short jobs pays for and does not need.

Measured by CPU time (bench/cpuprof.py, 20,000 `echo` jobs on 4 loopback hosts), asyncssh's
Python per SSH packet is about a third of the master's CPU. Three parts of it buy nothing here,
and each is turned off on our own connections and channels, by instance attributes that shadow
asyncssh's methods (asyncssh's classes and installed files stay as they are; a connection
whose asyncssh lacks a part this relies on is left alone):

- **An empty SSH_MSG_IGNORE before every packet sent.** asyncssh inserts one ahead of each
  packet once encryption is on: the old countermeasure to the CBC-mode attack on predictable
  IVs, which OpenSSH does not send. With a CTR, GCM or ChaCha20 cipher it protects nothing and
  doubles the packets the master encrypts and writes. Kept with a CBC cipher.
- **Packet debug lines built and dropped.** Every packet in and out is formatted for the log
  (its type's name, a plural of its size) before the logger finds its debug level below the
  packet level (3). Skipped while the level is below 3, checked at every packet, so
  `asyncssh.set_debug_level(3)` still logs every packet.
- **The keepalive timer re-armed at every read.** asyncssh cancels its timer and makes a new
  one each time data arrives. Here data arriving only notes the time; the timer, when it
  fires, re-arms itself for what is left of the interval if data came meanwhile, and otherwise
  does what asyncssh's own callback does (a keepalive request, or the connection dropped after
  `keepalive_count_max` unanswered ones). Same deadlines, one timer an interval.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncssh

MSG_IGNORE = 2
EMPTY_STRING = b"\0\0\0\0"
"""An SSH string of no bytes: the payload of asyncssh's own inserted SSH_MSG_IGNORE."""
PACKET_LEVEL = 3
"""asyncssh's debug level at which packets are logged (`SSHLogger.packet`)."""

_CONNECTION_NEEDS = (
    "send_packet", "get_extra_info", "log_sent_packet", "log_received_packet", "logger",
    "_loop", "_auth_complete", "_keepalive_interval", "_keepalive_timer",
    "_keepalive_timer_callback", "_reset_keepalive_timer", "_set_keepalive_timer",
    "_cancel_keepalive_timer",
)  # fmt: skip
_CHANNEL_NEEDS = ("log_sent_packet", "log_received_packet", "logger")


def lighten_connection(conn: asyncssh.SSHClientConnection) -> bool:
    """Turn off the three per-packet costs on `conn`; False if its asyncssh lacks a part."""
    if not all(hasattr(conn, name) for name in _CONNECTION_NEEDS):
        return False
    _skip_empty_ignores(conn)
    _quiet_packet_logs(conn)
    _lazy_keepalive(conn)
    return True


def lighten_channel(channel: Any) -> bool:
    """Skip the packet debug lines of a channel's packets (its data in and out)."""
    if not all(hasattr(channel, name) for name in _CHANNEL_NEEDS):
        return False
    _quiet_packet_logs(channel)
    return True


def uses_cbc(cipher: object) -> bool:
    """Whether an SSH cipher name is a CBC one, for which asyncssh's ignore packets matter."""
    return not isinstance(cipher, str) or "cbc" in cipher


def _skip_empty_ignores(conn: Any) -> None:
    stock: Callable[..., None] = conn.send_packet

    def send_packet(pkttype: int, *args: bytes, handler: Any = None) -> None:
        # asyncssh's inserted ignore calls `self.send_packet` again: it lands here.
        if (
            pkttype == MSG_IGNORE
            and args == (EMPTY_STRING,)
            and handler is None
            and not uses_cbc(conn.get_extra_info("send_cipher"))
        ):
            return
        stock(pkttype, *args, handler=handler)

    conn.send_packet = send_packet


def _quiet_packet_logs(handler: Any) -> None:
    logger = handler.logger
    stock_sent: Callable[..., None] = handler.log_sent_packet
    stock_received: Callable[..., None] = handler.log_received_packet

    def log_sent_packet(*args: Any, **kwargs: Any) -> None:
        if logger._debug_level >= PACKET_LEVEL:
            stock_sent(*args, **kwargs)

    def log_received_packet(*args: Any, **kwargs: Any) -> None:
        if logger._debug_level >= PACKET_LEVEL:
            stock_received(*args, **kwargs)

    handler.log_sent_packet = log_sent_packet
    handler.log_received_packet = log_received_packet


def _lazy_keepalive(conn: Any) -> None:
    loop = conn._loop
    stock_callback: Callable[[], None] = conn._keepalive_timer_callback
    last_read = loop.time()

    def reset() -> None:  # at every read: a note of the time, no new timer
        nonlocal last_read
        last_read = loop.time()
        if conn._keepalive_timer is None and conn._auth_complete:
            conn._set_keepalive_timer()

    def callback() -> None:
        conn._keepalive_timer = None
        interval = conn._keepalive_interval
        if not interval:  # keepalives turned off meanwhile (`set_keepalive(0)`)
            return
        due = last_read + interval
        if loop.time() < due:
            conn._keepalive_timer = loop.call_at(due, callback)
            return
        stock_callback()  # counts the silence, sends a keepalive request, re-arms (here)

    conn._reset_keepalive_timer = reset
    conn._keepalive_timer_callback = callback
    # The timer armed at authentication calls asyncssh's callback: re-arm it with ours.
    conn._cancel_keepalive_timer()
    conn._set_keepalive_timer()
