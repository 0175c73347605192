"""Housekeeping on an end machine: list the user's processes, signal them safely, probe the host.

`anet --find` and `anet --killall` ask every dispatcher to match the user's processes against a
regular expression (like `pgrep -f`), reading /proc directly: no `ps | grep`, so no grep to
match itself. What must never be matched, whatever the pattern:

- this dispatcher and its ancestors (the sshd session and login shell anet came through);
- every other anet dispatcher and its ancestors (another run's machinery, not its jobs);
- every sshd process (an SSH session is the user's lifeline to the machine);
- on the master's own machine, the master and its ancestors (the shell the user typed in):
  the master's command line contains the pattern, as the old `ps | grep` did; and the pipeline
  the master runs in (`anet --killall sim | grep sim`: the grep holds the pattern too);
- init, kernel threads, zombies, and anything of another user.

What keeps the user's sessions alive (login shells, terminals' session leaders, tmux and
screen, agents, Jupyter: `lifeline()`) is matched, but each row says so, and killall takes
those only with `--force`: a pattern that catches one is most likely broader than meant.

Killing is two requests, driven by the master: `SignalProcs` with TERM, then polls with signal
0, then KILL for the survivors. The grace period thus lives on the master, and this loop never
sleeps. Every target is named by pid *and* start time and re-checked before each signal, so a
recycled pid is never hit. A matched process that leads its own process group (a job started
by anet, a pipeline) is signalled as a group, children included, unless the group holds a
protected process.

Runs on the end machines: Python 3.8+, stdlib only.
"""

from __future__ import annotations

import os
import pwd
import re
import time

from .forked import TIMED_OUT, Forks
from .protocol import (
    DISPATCHER,
    MASTER,
    MAX_NAME,
    MAX_PID,
    MAX_TEXT,
    STUB_MARK,
    Message,
    bounded,
    integer,
    message,
    number,
)
from .record import frozen

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Any, Callable, Dict, List, Optional, Set, Tuple

STUB_MARKS = (STUB_MARK, "import base64,zlib;exec(zlib.decompress(base64.b64decode(")
"""How every anet dispatcher's command line starts after `python3 -S -c` (`python3 -c` before
the stub ran without `site`): this anet's stub, and an older anet's (base64), whose dispatchers
may still run on the same host."""

GONE = "gone"
SIGNALLED = "signalled"
ALIVE = "alive"
DENIED = "permission denied"
PROTECTED = "protected"
OUTCOMES = (GONE, SIGNALLED, ALIVE, DENIED, PROTECTED)


# -- messages (codes 20-39) ------------------------------------------------------------------


@message
@frozen
class FindProcs(Message):
    """Master -> dispatcher: list the user's processes whose command line matches `pattern`.

    `machine` and `master_pid` name the master's process (boot id + pid namespace, and pid),
    so that a dispatcher on the master's own machine never matches the master or its shell.
    `timeout` bounds the listing in seconds: a pattern that backtracks for ever (`(a+)+$`)
    gets an error reply then, and its matching is stopped (see `dispatcher.forked`).
    """

    CODE = 20
    SENDER = MASTER
    rid: int
    pattern: str
    machine: str
    master_pid: int
    timeout: float


ROW_FIELDS = (
    "pid", "start", "pgid", "group", "user", "elapsed", "cpu", "mem", "rss_kb", "command",
    "lifeline",
)  # fmt: skip
"""A ProcsFound row: `start` is in clock ticks since boot (the identity beside the pid),
`group` the number of processes in the group the process leads (0: it leads none, or its group
holds a protected process), `elapsed` seconds, `cpu` and `mem` percentages as `ps` shows them,
`lifeline` what of the user's sessions the process (or its group) keeps alive, "" for nothing
(see `lifeline()`): killall takes those only when told to."""


def _is_row(row: Any) -> bool:
    """A ProcsFound row whose every item has the type and range `ROW_FIELDS` says."""
    if not isinstance(row, list) or len(row) != len(ROW_FIELDS):
        return False
    pid, start, pgid, group, user, elapsed, cpu, mem, rss_kb, command, keeps = row
    return (
        integer(pid, 1, MAX_PID)
        and all(integer(v, 0) for v in (start, pgid, group, rss_kb))
        and all(number(v, 0) for v in (elapsed, cpu, mem))
        and all(isinstance(v, str) and len(v) <= MAX_NAME for v in (user, keeps))
        and isinstance(command, str)
    )


def _are_rows(rows: List[Any]) -> bool:
    return all(map(_is_row, rows))


def _is_outcome(pair: Any) -> bool:
    """A Signalled pair: [pid, one of OUTCOMES]."""
    return (
        isinstance(pair, list)
        and len(pair) == 2
        and integer(pair[0], 0)
        and isinstance(pair[1], str)
        and pair[1] in OUTCOMES
    )


def _are_outcomes(pairs: List[Any]) -> bool:
    return all(map(_is_outcome, pairs))


@message
@frozen
class ProcsFound(Message):
    """Dispatcher -> master: the matches, each a list in the order of `ROW_FIELDS`; or `error`."""

    CODE = 21
    SENDER = DISPATCHER
    rid: int
    procs: list = bounded(check=_are_rows)
    error: str = bounded(length=MAX_TEXT)


@message
@frozen
class SignalProcs(Message):
    """Master -> dispatcher: send `sig` to each target [pid, start, group]; 0 only checks.

    A target with `group` true is its process group: it is alive while any member is.
    """

    CODE = 22
    SENDER = MASTER
    rid: int
    targets: list
    sig: int
    machine: str
    master_pid: int


@message
@frozen
class Signalled(Message):
    """Dispatcher -> master: [pid, outcome] per target: signalled, alive, gone, permission
    denied, protected."""

    CODE = 23
    SENDER = DISPATCHER
    rid: int
    outcomes: list = bounded(check=_are_outcomes)


@message
@frozen
class ProbeHost(Message):
    """Master -> dispatcher: free memory and disk where jobs run, for `anet hosts check`."""

    CODE = 24
    SENDER = MASTER
    rid: int
    path: str


@message
@frozen
class HostProbe(Message):
    """Dispatcher -> master: MemAvailable and free disk (KiB, -1 when unknown), 1-minute load."""

    CODE = 25
    SENDER = DISPATCHER
    rid: int
    mem_free_kb: int = bounded(-1)
    disk_free_kb: int = bounded(-1)
    load: float = bounded(0)


# -- /proc ------------------------------------------------------------------------------------


class Proc:
    """What /proc says about one process."""

    __slots__ = (
        "argv", "name", "pgid", "pid", "ppid", "rss", "sid", "start", "state", "ticks", "tty",
        "uid",
    )  # fmt: skip

    def __init__(self, pid: int, stat: bytes, uid: int, argv: List[str]) -> None:
        self.pid = pid
        # The name is in parentheses and may itself hold ") ": split on the last one.
        head, _, tail = stat.rpartition(b")")
        self.name = head.partition(b"(")[2].decode("utf-8", "replace")
        fields = tail.split()
        self.state = fields[0].decode()
        self.ppid = int(fields[1])
        self.pgid = int(fields[2])
        self.sid = int(fields[3])
        self.tty = int(fields[4])  # the controlling terminal's device number; 0: none
        self.ticks = int(fields[11]) + int(fields[12])  # utime + stime
        self.start = int(fields[19])
        self.rss = int(fields[21])  # pages
        self.uid = uid
        self.argv = argv

    @property
    def command(self) -> str:
        return " ".join(self.argv)


def read_proc(pid: int, light: bool = False) -> Optional[Proc]:
    """The process, or None when it is gone (or unreadable: another user's, hidepid).

    `light` reads only its stat (no uid, no command line): enough to tell whether it and its
    group are still alive, at a third of the cost, for the polls of a grace period.
    """
    base = "/proc/%d/" % pid
    try:
        with open(base + "stat", "rb") as f:
            stat = f.read()
        if light:
            return Proc(pid, stat, -1, [])
        with open(base + "status", "rb") as f:
            uid = -1
            for line in f:
                if line.startswith(b"Uid:"):
                    uid = int(line.split()[1])  # the real uid
                    break
        with open(base + "cmdline", "rb") as f:
            raw = f.read()
    except (OSError, ValueError, IndexError):
        return None
    argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0")]
    while argv and not argv[-1]:
        argv.pop()
    try:
        return Proc(pid, stat, uid, argv)
    except (IndexError, ValueError):
        return None


def process_table(light: bool = False) -> Dict[int, Proc]:
    """Every live process; raises OSError where there is no /proc (macOS, BSD)."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            proc = read_proc(int(name), light)
            if proc is not None:
                table[proc.pid] = proc
    return table


def machine_id() -> str:
    """Boot id and pid namespace: equal on two sides only when their pids mean the same."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return boot + ":" + os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _ancestors(table: Dict[int, Proc], pid: int) -> Set[int]:
    found = set()
    while pid in table and pid not in found and pid > 1:
        found.add(pid)
        pid = table[pid].ppid
    return found


MULTIPLEXERS = ("tmux", "screen", "mosh-server", "dtach", "abduco", "zellij")
AGENTS = ("ssh-agent", "gpg-agent")
NOTEBOOKS = ("jupyter", "ipykernel")


def lifeline(proc: Proc) -> str:
    """What of the user's sessions `proc` keeps alive, or "" when nothing does.

    Killing one of these ends a session or a piece of the user's own work at the machine, not a
    computation: a terminal multiplexer and every window in it, a login shell or a terminal's
    shell (the session leader that owns the terminal), an agent holding keys, the user's
    service manager, a Jupyter server or kernel (its notebooks' state), a VS Code server.
    """
    program = os.path.basename(proc.argv[0]) if proc.argv else ""
    names = (proc.name.lower(), program.lower())  # comm "tmux: server"; argv[0] "SCREEN"
    if any(name.split(":")[0] in MULTIPLEXERS for name in names):
        return "terminal multiplexer"
    if any(name in AGENTS for name in names):
        return "agent"
    if proc.argv and proc.argv[0].startswith("-"):
        return "login shell"
    if proc.sid == proc.pid and proc.tty:
        return "terminal session"
    if proc.name in ("systemd", "(sd-pam)"):  # the user's own `systemd --user`
        return "service manager"
    if _runs(proc.argv, NOTEBOOKS):
        return "Jupyter"
    if any("/.vscode-server/" in arg for arg in proc.argv[:2]):
        return "VS Code server"
    return ""


def _runs(argv: List[str], programs: tuple) -> bool:
    """The program itself, the script an interpreter runs, or its `-m` module, is one of
    `programs` (by prefix: jupyter-lab, ipykernel_launcher)."""
    run = argv[:2]
    if len(argv) >= 3 and argv[1] == "-m":
        run = argv[2:3]
    return any(os.path.basename(arg).startswith(programs) for arg in run)


def is_dispatcher(proc: Proc) -> bool:
    argv = proc.argv
    at = 2 if len(argv) > 2 and argv[1] == "-S" else 1  # an older anet's has no -S
    return len(argv) > at + 1 and argv[at] == "-c" and argv[at + 1].startswith(STUB_MARKS)


def protected(table: Dict[int, Proc], machine: str, master_pid: int) -> Set[int]:
    """Pids that are never matched nor signalled: see the module docstring for why each."""
    keep = {1} | _ancestors(table, os.getpid())
    for proc in table.values():
        if is_dispatcher(proc) or proc.name == "sshd" or proc.name.startswith("sshd-"):
            keep |= _ancestors(table, proc.pid)
    if machine and machine == machine_id():
        keep |= _ancestors(table, master_pid) | _pipeline(table, master_pid)
    return keep


def _pipeline(table: Dict[int, Proc], pid: int) -> Set[int]:
    """The shell pipeline `pid` runs in (`anet --killall sim | grep sim | head`): the members
    of its process group that read what it writes, what those write, and so on, and those it
    reads from, and so on. A stdout->stdin pipe is the link: a job that merely writes to the
    same pipe as `pid` (`sim & anet --killall sim`, in a script whose output is piped) is not
    part of it."""
    proc = table.get(pid)
    if proc is None:
        return set()
    ends = {p.pid: _pipe_ends(p.pid) for p in table.values() if p.pgid == proc.pgid}
    downstream = _follow(ends, pid, lambda a, b: bool(a[1] & b[0]))
    upstream = _follow(ends, pid, lambda a, b: bool(b[1] & a[0]))
    return downstream | upstream


def _follow(ends: Dict[int, Tuple[Set[str], Set[str]]], start: int, linked: Callable) -> Set[int]:
    """Every process reached from `start` through `linked(from_ends, to_ends)` steps."""
    found, todo = {start}, [start]
    while todo:
        here = ends.get(todo.pop(), (set(), set()))
        for other, there in ends.items():
            if other not in found and linked(here, there):
                found.add(other)
                todo.append(other)
    return found


def _pipe_ends(pid: int) -> Tuple[Set[str], Set[str]]:
    """The pipes (`pipe:[inode]`) on `pid`'s stdin, and on its stdout and stderr."""
    reads, writes = set(), set()  # type: Set[str], Set[str]
    for fd, side in ((0, reads), (1, writes), (2, writes)):
        try:
            target = os.readlink("/proc/%d/fd/%d" % (pid, fd))
        except OSError:
            continue
        if target.startswith("pipe:"):
            side.add(target)
    return reads, writes


def _matchable(proc: Proc, uid: int, keep: Set[int]) -> bool:
    return proc.uid == uid and proc.pid not in keep and bool(proc.argv) and proc.state not in "ZX"


def _group(table: Dict[int, Proc], proc: Proc, uid: int, keep: Set[int]) -> List[Proc]:
    """The live members of the group `proc` leads, when it is safe to signal as a whole."""
    if proc.pgid != proc.pid:
        return []
    members = [p for p in table.values() if p.pgid == proc.pid and p.state not in "ZX"]
    if any(p.pid in keep or p.uid != uid for p in members):
        return []
    return members


def find(pattern: str, machine: str, master_pid: int) -> List[List[Any]]:
    """The user's processes whose full command line matches `pattern` (re.search), as rows."""
    regex = re.compile(pattern)
    table = process_table()
    keep = protected(table, machine, master_pid)
    uid = os.getuid()
    hz = os.sysconf("SC_CLK_TCK")
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    uptime = _uptime()
    total_kb = _meminfo().get("MemTotal", 0)
    rows = []
    for proc in sorted(table.values(), key=lambda p: p.pid):
        if not _matchable(proc, uid, keep) or not regex.search(proc.command):
            continue
        elapsed = max(0.0, uptime - proc.start / hz)
        cpu = 100.0 * proc.ticks / hz / elapsed if elapsed > 0 else 0.0
        rss_kb = proc.rss * page_kb
        mem = 100.0 * rss_kb / total_kb if total_kb else 0.0
        group = _group(table, proc, uid, keep)
        kept = [lifeline(p) for p in [proc, *group]]  # the whole group goes when it leads one
        rows.append(
            [proc.pid, proc.start, proc.pgid, len(group), _user(proc.uid), round(elapsed, 2),
             round(cpu, 1), round(mem, 1), rss_kb, proc.command, next(filter(None, kept), "")]
        )  # fmt: skip
    return rows


def signal_targets(targets: List[Any], sig: int, machine: str, master_pid: int) -> List[Any]:
    """Signal each [pid, start, group] target that is still the same process; say what happened.

    Signal 0 only asks whether each target (its group, for a group) is still alive.
    """
    table = process_table(light=not sig)
    keep = protected(table, machine, master_pid) if sig else set()
    uid = os.getuid()
    outcomes = []
    for pid, start, group in targets:
        proc = table.get(pid)
        same = proc is not None and proc.start == start and proc.state not in "ZX"
        members = [p for p in table.values() if p.pgid == pid and p.state not in "ZX"]
        alive = bool(members) if group else same
        if not alive:
            outcomes.append([pid, GONE])
        elif not sig:
            outcomes.append([pid, ALIVE])
        elif (group and any(p.pid in keep or p.uid != uid for p in members)) or (
            not group and (proc is None or not _matchable(proc, uid, keep))
        ):
            outcomes.append([pid, PROTECTED])
        else:
            outcomes.append([pid, _send(pid, sig, group)])
    return outcomes


def _send(pid: int, sig: int, group: bool) -> str:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        return GONE
    except PermissionError:
        return DENIED
    return SIGNALLED


def probe(path: str) -> List[Any]:
    """[MemAvailable KiB, free KiB on the file system of `path`, 1-minute load]."""
    mem = _meminfo().get("MemAvailable", -1)
    try:
        vfs = os.statvfs(path or ".")
        disk = vfs.f_bavail * vfs.f_frsize // 1024
    except OSError:
        disk = -1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return [mem, disk, load]


def _uptime() -> float:
    try:
        with open("/proc/uptime") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return time.monotonic()


def _meminfo() -> Dict[str, int]:
    found = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                parts = value.split()
                if parts and parts[0].isdigit():
                    found[key] = int(parts[0])
    except OSError:
        pass
    return found


_USERS: Dict[int, str] = {}


def _user(uid: int) -> str:
    if uid not in _USERS:
        try:
            _USERS[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            _USERS[uid] = str(uid)
    return _USERS[uid]


# -- the dispatcher's handlers ----------------------------------------------------------------


MAX_TIMEOUT = 3600.0
"""The longest a listing may take, whatever the master asks."""


def register(
    handlers: Dict[type, Callable[[Any], None]], send: Callable[[Message], None], forks: Forks
) -> None:
    """Add this module's request handlers to a Dispatcher's `handlers`; replies go to `send`;
    a listing runs in a child of `forks`, so that no pattern can stall the loop."""

    def on_find(msg: FindProcs) -> None:
        bound = min(max(msg.timeout, 0.1), MAX_TIMEOUT)

        def work() -> ProcsFound:
            try:
                rows, error = find(msg.pattern, msg.machine, msg.master_pid), ""
            except re.error as exc:
                rows, error = [], "bad pattern: %s" % exc
            except OSError as exc:
                rows, error = [], "cannot list processes (needs Linux /proc): %s" % exc
            return ProcsFound(msg.rid, rows, error)

        def failed(why: str) -> ProcsFound:
            if why == TIMED_OUT:
                why = (
                    "the pattern took over %gs to match (nested repeats such as (a+)+ can "
                    "backtrack for ever): simplify it" % bound
                )
            else:
                why = "cannot list processes: %s" % why
            return ProcsFound(msg.rid, [], why)

        forks.start(msg.rid, work, failed, bound)

    def on_signal(msg: SignalProcs) -> None:
        try:
            outcomes = signal_targets(msg.targets, msg.sig, msg.machine, msg.master_pid)
        except (OSError, ValueError, TypeError):
            outcomes = [[t[0], DENIED] for t in msg.targets if isinstance(t, list) and t]
        send(Signalled(msg.rid, outcomes))

    def on_probe(msg: ProbeHost) -> None:
        send(HostProbe(msg.rid, *probe(msg.path)))

    handlers[FindProcs] = on_find
    handlers[SignalProcs] = on_signal
    handlers[ProbeHost] = on_probe
