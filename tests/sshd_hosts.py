"""Real OpenSSH ``sshd`` hosts on loopback, for transport tests and benchmarks.

Each fake host is its own ``sshd -D`` process listening on its own 127.0.0.x address with its own
host key, run as the current user (root in CI, anyone on a laptop).  They all log in that same
Unix user, so sshd hands every session a per-host ``ANET_HOME``: anet's remote side keeps its
cache and work directories there, and the marker lets us find every process a host started,
even the ones that daemonised and were reparented to init.

Every session also gets a per-host, empty ``HOME``, so the user's own dotfiles never run on the
fake hosts.  They used to: root's ~/.bashrc on the dev box runs ``pyenv init``, whose rehash
waits up to 60 s for a lock file shared by every shell; once a host had been stopped or frozen
mid-login, later logins stalled for over 30 s.  The price is that the remote ``python3`` is
whatever sshd's stock ``PATH`` finds, as on a fresh machine.

Nothing here kills a process it cannot tie to a listener it started: either a descendant of
that listener or a process carrying the host's ``ANET_HOME`` marker.  Processes are identified
by pid *and* start time so a recycled pid is never signalled.

Usage::

    with SshdCluster(tmp_path, 4, noisy={2}) as cluster:
        subprocess.run(cluster.ssh_argv("host1", "echo hi"))
        cluster["host3"].freeze()
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Collection, Iterable, Sequence
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Self

SSHD_FALLBACK = Path("/usr/sbin/sshd")
"""Where Debian puts sshd; a non-root ``PATH`` usually lacks ``/usr/sbin``."""

STOCK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The PATH that follows a host's shim directory: what a stock sshd gives a session."""

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_SFTP_SERVERS = (
    Path("/usr/lib/openssh/sftp-server"),  # Debian, Ubuntu
    Path("/usr/libexec/openssh/sftp-server"),  # Fedora, RHEL
    Path("/usr/lib/ssh/sftp-server"),  # Arch
)
_UNSAFE_PATH_CHARS = re.compile(r"[\s\"'%#\\]")
PARTITION_TAG = f"anet-test-partition-{os.getpid()}"
"""The iptables comment on every rule :meth:`SshdHost.partition` adds: this process's rules."""

ProcId = tuple[int, int]
"""(pid, start time in clock ticks): unlike a bare pid, it cannot be recycled."""


class SshdError(RuntimeError):
    """sshd or ssh-keygen is missing, or an sshd would not start (the message has its log)."""


# --------------------------------------------------------------------------------------------
# Locating OpenSSH


def find_sshd() -> Path:
    """The sshd binary; tests must fail, not skip, without it, so this raises."""
    found = shutil.which("sshd")
    if found:
        return Path(found).resolve()
    if SSHD_FALLBACK.is_file():
        return SSHD_FALLBACK
    raise SshdError(
        f"OpenSSH server not found (no sshd on PATH, none at {SSHD_FALLBACK}): "
        "install it, e.g. `apt-get install openssh-server`"
    )


def _find_tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin")
    if not found:
        raise SshdError(f"{name} not found: install openssh-client")
    return found


@cache
def sshd_version(sshd: Path) -> tuple[int, int]:
    """(major, minor) of sshd, parsed from its -V banner (older ones print it in the usage)."""
    proc = subprocess.run(
        [str(sshd), "-V"], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", proc.stdout + proc.stderr)
    if match is None:
        raise SshdError(f"cannot tell the version of {sshd}: {proc.stderr.strip()!r}")
    return int(match[1]), int(match[2])


def _sftp_server() -> str:
    """A real sftp-server binary like a stock host has (it runs through the login shell)."""
    for path in _SFTP_SERVERS:
        if path.is_file():
            return str(path)
    return "internal-sftp"


def _keygen(path: Path, comment: str) -> str:
    """Make an ed25519 key pair without passphrase and return the public key line."""
    subprocess.run(
        [_find_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


def _free_ports(addresses: Sequence[str]) -> list[int]:
    """One free port per address; all sockets stay bound until the end so none repeats."""
    socks = []
    try:
        for address in addresses:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((address, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


# --------------------------------------------------------------------------------------------
# /proc scanning and careful signalling


def _proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, state, start time) for every live process."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _read_stat(int(entry.name))
            if stat is not None:
                table[int(entry.name)] = stat
    return table


def _read_stat(pid: int) -> tuple[int, str, int] | None:
    try:
        raw = _read_proc(f"/proc/{pid}/stat").decode(errors="replace")
    except OSError:
        return None
    # The command name is in parentheses and may itself contain ") ", so split on the last one.
    fields = raw.rpartition(")")[2].split()
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(table: dict[int, tuple[int, str, int]], roots: Iterable[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _marked_pids(marker: bytes) -> list[int]:
    """Pids whose initial environment holds exactly the entry ``marker``."""
    return _marked_pids_of([marker])[marker]


def _marked_pids_of(markers: Collection[bytes]) -> dict[bytes, list[int]]:
    """For each marker, the pids whose initial environment holds exactly that entry: one
    reading of every process's environment for all of them."""
    found: dict[bytes, list[int]] = {marker: [] for marker in markers}
    entries = [(marker, b"\0" + marker + b"\0") for marker in markers]
    us = str(os.getpid())
    for name in os.listdir("/proc"):
        if not name.isdigit() or name == us:
            continue
        try:
            environ = b"\0" + _read_proc(f"/proc/{name}/environ") + b"\0"
        except OSError:  # gone, or someone else's process
            continue
        for marker, entry in entries:
            if entry in environ:  # the entry whole, wherever it is
                found[marker].append(int(name))
    return {marker: sorted(pids) for marker, pids in found.items()}


def _read_proc(path: str) -> bytes:
    """A /proc file's bytes: plain os calls, as the scans of every process read hundreds (a
    host's stop reads each process's stat and environ some four times)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _is_running(proc: ProcId) -> bool:
    """Still there and not a zombie: an orphan's zombie lingers until PID 1 gets round to it."""
    stat = _read_stat(proc[0])
    return stat is not None and stat[2] == proc[1] and stat[1] not in "ZX"


def _signal(procs: Iterable[ProcId], sig: signal.Signals) -> None:
    for proc in procs:
        if _is_running(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc[0], sig)


def _wait_gone(procs: Collection[ProcId], timeout: float) -> list[ProcId]:
    """Wait for ``procs`` to die; return the ones still running at the deadline."""
    deadline = time.monotonic() + timeout
    left = [p for p in procs if _is_running(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if _is_running(p)]
    return left


# --------------------------------------------------------------------------------------------
# One host


class SshdHost:
    """One fake machine: an ``sshd -D`` listener plus everything started through it."""

    def __init__(self, dir: Path, name: str, address: str, port: int, user: str) -> None:
        self.name = name
        self.address = address
        self.port = port
        self.user = user
        self.dir = dir
        self.anet_home = dir / "anet"
        """This host's ``$ANET_HOME``; not created here: anet must make it, as on a real host."""
        self.home = dir / "home"
        """This host's ``$HOME``: empty, so no dotfile of the real user runs on the fake host."""
        self.shims = dir / "shims"
        """Ahead of the stock PATH on a host made with ``shims``: a test puts fake commands
        there (a ``python3`` that starts a hostile dispatcher); empty, it changes nothing."""
        self.config = dir / "sshd_config"
        self.log = dir / "sshd.log"
        self.host_key = dir / "ssh_host_ed25519_key"
        self._listener: subprocess.Popen[bytes] | None = None
        self._frozen = False
        self._partitioned = False

    def __repr__(self) -> str:
        return f"<SshdHost {self.name} {self.spec} alive={self.alive} frozen={self._frozen}>"

    @property
    def spec(self) -> str:
        """``user@127.0.0.x:port``: reaches this host without the cluster's ssh config."""
        return f"{self.user}@{self.address}:{self.port}"

    @property
    def alive(self) -> bool:
        """The listener process exists (a frozen host is alive, it just does not answer)."""
        return self._listener is not None and self._listener.poll() is None

    @property
    def frozen(self) -> bool:
        return self._frozen

    @property
    def pid(self) -> int | None:
        """The listener's pid while it runs."""
        return self._listener.pid if self.alive and self._listener else None

    def start(self) -> None:
        """Start (or restart) sshd on the same address, port and key; return once it answers."""
        if self.alive:
            raise SshdError(f"{self.name} is already running")
        if os.geteuid() == 0:
            # Root sshd insists on its privilege separation directory existing.
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        # -r: each connection's sshd is a fork of the listener, not a new sshd that reads its
        # config and host key again (re-exec guards a real server's address-space layout; here
        # it cost a third of sshd's CPU a connection, some 8 of 27 ms).
        with self.log.open("ab") as log:  # early errors land on stderr, before -E takes over
            self._listener = subprocess.Popen(
                [str(find_sshd()), "-D", "-r", "-f", str(self.config), "-E", str(self.log)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self._frozen = False
        self._wait_ready()

    def stop(self) -> None:
        """Crash the host: SIGTERM the listener, SIGKILL every session and process it started."""
        self.heal()
        if self._listener is None:
            return
        listener, self._listener, self._frozen = self._listener, None, False
        victims = self._freeze_everything(listener.pid)
        listener.terminate()
        listener.send_signal(signal.SIGCONT)  # it may be frozen; the victims stay stopped
        try:
            listener.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            listener.kill()
            listener.wait()
        for _ in range(3):
            _signal(victims, signal.SIGKILL)
            if left := _wait_gone(victims, STOP_TIMEOUT):
                raise SshdError(f"{self.name}: processes survived SIGKILL: {left}")
            # Anything forked before its parent was stopped carries the marker: one more sweep.
            victims = self._freeze_everything(None)
            if not victims:
                return
        raise SshdError(f"{self.name}: processes keep appearing: {self.processes()}")

    def freeze(self) -> None:
        """SIGSTOP the host: new connections hang before the banner, open sessions hang too."""
        if self._listener is None or not self.alive:
            raise SshdError(f"{self.name} is not running")
        self._freeze_everything(self._listener.pid)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT everything :meth:`freeze` stopped."""
        if self._listener is not None:
            _signal(self._tree(self._listener.pid), signal.SIGCONT)
        self._frozen = False

    def partition(self) -> None:
        """Cut the host off the network, both ways: TCP stays open, nothing arrives (root and
        iptables needed). Undone by :meth:`heal`, and by :meth:`stop`, so no rule outlives it.

        Only this host's sshd port is cut, not its address: every cluster on the machine uses
        the same 127.0.0.x addresses, and another test run's hosts must not go silent too.
        """
        self._iptables("-I")
        self._partitioned = True

    def heal(self) -> None:
        """Remove what :meth:`partition` added (idempotent)."""
        if self._partitioned:
            self._iptables("-D")
            self._partitioned = False

    def _iptables(self, action: str) -> None:
        for way in (("-d", "--dport"), ("-s", "--sport")):  # to sshd, and from it
            where = [way[0], self.address, way[1], str(self.port)]
            rule = ["INPUT", "-p", "tcp", *where, "-m", "comment", "--comment", PARTITION_TAG]
            subprocess.run(
                ["iptables", "-w", action, *rule, "-j", "DROP"],
                check=action == "-I", capture_output=True,
            )  # fmt: skip

    def accepted_connections(self) -> int:
        """Successful logins so far, across restarts (sshd appends to one log)."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count("Accepted publickey for ")

    @property
    def marker(self) -> bytes:
        """The environment entry every process this host started carries."""
        return f"ANET_HOME={self.anet_home}".encode()

    def processes(self) -> list[tuple[int, str]]:
        """(pid, command line) of every live process whose environment has this ANET_HOME."""
        return [(pid, _cmdline(pid)) for pid in _marked_pids(self.marker)]

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def _tree(self, listener: int | None) -> set[ProcId]:
        """The listener, its descendants and the marked processes, as identities."""
        table = _proc_table()
        roots = [] if listener is None else [listener]
        pids = set(roots) | _descendants(table, roots)
        pids.update(pid for pid, _ in self.processes())
        return {(pid, table[pid][2]) for pid in pids if pid in table}

    def _freeze_everything(self, listener: int | None) -> set[ProcId]:
        """SIGSTOP the tree until no new process shows up (a stopped process cannot fork)."""
        stopped: set[ProcId] = set()
        for _ in range(50):
            new = self._tree(listener) - stopped
            if not new:
                break
            _signal(new, signal.SIGSTOP)
            stopped |= new
        return stopped

    def _wait_ready(self) -> None:
        """Poll until the port answers with an SSH banner; raise with the log if sshd dies."""
        assert self._listener is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._listener.poll() is not None:
                self._listener = None
                raise SshdError(f"sshd for {self.name} exited:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.address, self.port), timeout=1.0) as sock:
                    if sock.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise SshdError(f"sshd for {self.name} not ready in {READY_TIMEOUT}s:\n{self.log_tail()}")


# --------------------------------------------------------------------------------------------
# The cluster: N hosts plus the client side files


class SshdCluster:
    """N sshd hosts ``host1``..``hostN`` at 127.0.0.2.., and an ssh config that reaches them.

    ``noisy`` holds host numbers (``{2}`` is host2) whose login prints banner lines on stdout and
    stderr before running the command, like a chatty ``.bashrc``.  Sessions on the hosts in
    ``shims`` find :attr:`SshdHost.shims` first on their ``PATH``, so a test can replace a
    command on that host alone (tests/hostile_dispatcher.py replaces ``python3``).
    ``extra_config`` lines are appended to every sshd_config (e.g. ``"MaxSessions 2"``); sshd
    keeps the *first* value of a keyword, so they add settings but cannot override ours (a
    noisy host's ForceCommand, the SetEnv line).  Start with :meth:`start` or ``with``;
    :meth:`close` leaves nothing running.
    """

    def __init__(
        self,
        root: Path,
        n: int,
        *,
        noisy: Collection[int] = frozenset(),
        shims: Collection[int] = frozenset(),
        extra_config: Sequence[str] = (),
    ) -> None:
        self.root = root.resolve()
        # sshd_config and ssh_config expand %-tokens and split on blanks: keep paths plain.
        if _UNSAFE_PATH_CHARS.search(str(self.root)):
            raise ValueError(f"cluster root must be a plain path: {self.root}")
        for what, numbers in (("noisy", noisy), ("shims", shims)):
            if unknown := set(numbers) - set(range(1, n + 1)):
                raise ValueError(f"{what} names hosts that do not exist: {sorted(unknown)}")
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.ssh_config = self.root / "ssh_config"
        self.known_hosts = self.root / "known_hosts"
        self.client_key = self.root / "client_key"
        self.authorized_keys = self.root / "authorized_keys"
        addresses = [str(ipaddress.IPv4Address("127.0.0.1") + i) for i in range(1, n + 1)]
        self.hosts = [
            SshdHost(self.root / "hosts" / f"host{i}", f"host{i}", address, port, self.user)
            for i, (address, port) in enumerate(
                zip(addresses, _free_ports(addresses), strict=True), 1
            )
        ]
        self._shimmed = {f"host{i}" for i in shims}
        self._write_files(noisy={f"host{i}" for i in noisy}, extra_config=extra_config)

    def __getitem__(self, name: str) -> SshdHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def names(self) -> list[str]:
        """Host aliases defined in :attr:`ssh_config`: the host specs to give anet."""
        return [host.name for host in self.hosts]

    def ssh_argv(self, host: str, command: str, *options: str) -> list[str]:
        """argv for the real OpenSSH client: ``ssh -F <config> [options] host command``."""
        return ["ssh", "-F", str(self.ssh_config), *options, host, command]

    def start(self) -> None:
        """Start every host not yet running; on failure stop those already started."""
        try:
            for host in self.hosts:
                if not host.alive:
                    host.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every host (idempotent); raise after all were tried if any refused to die."""
        errors = []
        for host in self.hosts:
            try:
                host.stop()
            except SshdError as exc:
                errors.append(str(exc))
        if errors:
            raise SshdError("; ".join(errors))

    def _write_files(self, *, noisy: set[str], extra_config: Sequence[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.authorized_keys.write_text(_keygen(self.client_key, "anet-test-client") + "\n")
        known, client = [], []
        for host in self.hosts:
            host.home.mkdir(parents=True)
            if host.name in self._shimmed:
                host.shims.mkdir()
            public = _keygen(host.host_key, host.name).split()
            known.append(f"[{host.address}]:{host.port} {public[0]} {public[1]}\n")
            client.append(self._client_entry(host))
            lines = self._sshd_lines(host)
            if host.name in noisy:
                lines.append(f"ForceCommand {self._write_noisy_login(host)}")
            host.config.write_text("\n".join([*lines, *extra_config, ""]))
        self.known_hosts.write_text("".join(known))
        self.ssh_config.write_text("\n".join([*client, self._client_defaults()]))

    def _sshd_lines(self, host: SshdHost) -> list[str]:
        sshd = find_sshd()
        lines = [
            f"ListenAddress {host.address}:{host.port}",
            f"HostKey {host.host_key}",
            f"PidFile {host.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "StrictModes no",  # pytest's tmp dirs may be group-writable for a developer
            "UsePAM no",  # PAM would need root and a service file
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "LogLevel VERBOSE",
            f"Subsystem sftp {_sftp_server()}",
            # SetEnv comes after sshd's own HOME and PATH, so it overrides them.
            f"SetEnv HOME={host.home} ANET_HOME={host.anet_home}"
            + (f" PATH={host.shims}:{STOCK_PATH}" if host.name in self._shimmed else ""),
        ]
        if sshd_version(sshd) >= (9, 8):
            # 9.8 penalises sources that connect without logging in, such as our readiness
            # probe and tests that kill hosts mid-session; every test client is 127.0.0.1.
            lines.append("PerSourcePenalties no")
        return lines

    def _client_entry(self, host: SshdHost) -> str:
        return (
            f"Host {host.name}\n"
            f"    HostName {host.address}\n"
            f"    Port {host.port}\n"
            f"    User {host.user}\n{self._client_auth()}"
        )

    def _client_defaults(self) -> str:
        """Patterns match the name as typed, so ``user@127.0.0.x:port`` specs need their own."""
        return f"Host 127.*\n{self._client_auth()}"

    def _client_auth(self) -> str:
        return (
            f"    IdentityFile {self.client_key}\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {self.known_hosts}\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
        )

    @staticmethod
    def _write_noisy_login(host: SshdHost) -> Path:
        """A ForceCommand that chats on both streams, then runs what the client asked for.

        Not ``SetEnv BASH_ENV``: bash started by sshd reads ~/.bashrc instead of $BASH_ENV
        (Debian builds it with SSH_SOURCE_BASHRC), yet every bash *script* the session later
        runs would read it, so the banner would show up in the wrong places.  Not a chatty
        ~/.bashrc either: other distributions' bash skips it for ssh commands.
        """
        script = host.dir / "noisy-login.sh"
        script.write_text(
            "#!/bin/sh\n"
            f'echo "Welcome to {host.name} (noisy login banner)"\n'
            'echo "Last login: a while ago"\n'
            f'echo "{host.name}: noisy login banner on stderr" >&2\n'
            'if [ -n "${SSH_ORIGINAL_COMMAND+set}" ]; then\n'
            '    exec "$SHELL" -c "$SSH_ORIGINAL_COMMAND"\n'
            "fi\n"
            'exec "$SHELL" -l\n'
        )
        script.chmod(0o755)
        return script


def partition_rules() -> list[str]:
    """The iptables rules this process's partitions left in place (``iptables -S`` lines)."""
    listed = subprocess.run(["iptables", "-w", "-S"], check=True, capture_output=True, text=True)
    return [line for line in listed.stdout.splitlines() if PARTITION_TAG in line]


def leftover_processes(
    hosts: Iterable[SshdHost], grace: float = 3.0
) -> dict[str, list[tuple[int, str]]]:
    """Host name -> processes still running after ``grace`` seconds (empty dict if none).

    The grace period lets sessions that are already exiting finish on their own.
    """
    hosts = list(hosts)
    deadline = time.monotonic() + grace
    while True:
        found = _marked_pids_of([host.marker for host in hosts])
        left = {
            host.name: [(pid, _cmdline(pid)) for pid in found[host.marker]]
            for host in hosts
            if found[host.marker]
        }
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)
