"""`anet find|killall|onall` and `anet hosts check|scan`: housekeeping of a pool of machines.

Each command asks every host in parallel (`anet.housekeeping.Machines`), then prints one
table (or one JSON line per row with `--format jsonl`). A host that cannot be reached is a row
of the answer, not a failure of the command: a pool always has a machine down somewhere.
The exit status says whether everything asked for was done (see `Status`).
"""

from __future__ import annotations

import itertools
import json
import re
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from enum import IntEnum
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import logs
from ..api import KEEPALIVE
from ..errors import UsageError
from ..housekeeping import HostCheck, HostKills, HostOutput, HostProcesses, Machines
from ..printable import printable
from ..remote.hostlist import fold_hostlist
from ..remote.hosts import HostSpec, parse_spec
from ..remote.scan import SCAN_CONCURRENCY, SCAN_TIMEOUT, expand_targets, scan
from ..views.tables import KIB_LETTERS, align_columns, size_text
from . import common
from .common import (
    Environment,
    ExitStatus,
    HostArgs,
    host_options,
    log_options,
    quiet_host_failures,
    run_async,
)

T = TypeVar("T")


class Status(IntEnum):
    """Exit statuses of the housekeeping commands (onall counts failed hosts instead)."""

    OK = 0
    NO_MATCH = 1  # find, killall: no process matched (as pgrep and pkill say it)
    INCOMPLETE = 3  # a host could not be asked, or a process could not be killed
    REFUSED = 4  # killall: a match keeps a session alive and --force was not given


FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True,
    help="A table for people, or one JSON object a line for scripts.",
)  # fmt: skip


# -- shared plumbing --------------------------------------------------------------------------


def _machines(host_args: HostArgs, env: Environment, timeout: float | None = None) -> Machines:
    ssh = host_args.ssh_options(KEEPALIVE)
    if timeout is not None:
        ssh = replace(ssh, connect_timeout=timeout)
    return Machines(host_args.resolve(env), ssh=ssh)


async def _ask(machines: Machines, verb: Callable[[Machines], Awaitable[T]]) -> T:
    """Run one verb over the hosts; their failures are in its answer, so the cluster's own
    "retrying" warnings would only repeat them (shown with -v)."""
    with quiet_host_failures():
        async with machines:
            return await verb(machines)


def _write(env: Environment, text: str) -> None:
    env.stdout.write(text.encode(errors="surrogateescape"))
    env.stdout.flush()


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Numbers right-aligned, the last column (a command line, an error) left as it is.

    Cells are mostly what hosts said (command lines, errors, banners): escaped, on one line.
    """
    body = [[printable(str(c)) for c in row] for row in rows]
    right = [all(_is_number(row[i]) for row in body) for i in range(len(header) - 1)]
    lines, _ = align_columns([str(c) for c in header], body, [*right, False])
    return "".join(line + "\n" for line in lines)


def _is_number(text: str) -> bool:
    return text.replace(".", "", 1).replace("-", "", 1).isdigit()


def _jsonl(env: Environment, records: Sequence[dict[str, Any]]) -> None:
    _write(env, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _report_down(env: Environment, answers: Sequence[Any]) -> int:
    """One stderr line per host that could not be asked; their number."""
    down = [a for a in answers if a.error is not None]
    for answer in down:
        host, error = answer.host, answer.error
        env.stderr.write(logs.line(f"{host}: {error}", "error", host=host, error=error))
    return len(down)


def elapsed_text(seconds: float) -> str:
    """`ps -o etime` style: [[dd-]hh:]mm:ss."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{minutes:02d}:{secs:02d}"
    if hours or days:
        text = f"{hours:02d}:{text}"
    return f"{days}-{text}" if days else text


def _size(kb: int | None) -> str:
    return "-" if kb is None else size_text(kb, KIB_LETTERS)


def _signal_number(text: str) -> int:
    """TERM, SIGTERM, term or 15."""
    if text.isdigit():
        return int(text)
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise UsageError(f"unknown signal {text!r}") from None


# -- patterns -----------------------------------------------------------------------------------


class PatternCommand(click.Command):
    """A command whose PATTERN may come as several words, joined by single spaces: `anet
    --killall java -jar RED` is the pattern 'java -jar RED', as the command line of a program
    that Java's `Runtime.exec` started reads. See `pattern_args`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, pattern_args(args, self.get_params(ctx)))


def pattern_args(args: Sequence[str], params: Sequence[click.Parameter]) -> list[str]:
    """The command's options, then `--` and the pattern's words as one argument.

    A word is an option only when it is one of the command's option names exactly (or
    `--name=value`); every other word, `-jar` or `-j4` included, belongs to the pattern, and so
    does everything after `--`. A mistyped option thus only makes the pattern longer, so it
    matches less, never more.
    """
    takes_value: dict[str, bool] = {}
    for param in params:
        if isinstance(param, click.Option):
            for name in (*param.opts, *param.secondary_opts):
                takes_value[name] = not (param.is_flag or param.count)
    options: list[str] = []
    words: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            words.extend(rest)
            break
        name = arg.partition("=")[0] if arg.startswith("--") else arg
        if name not in takes_value:
            words.append(arg)
            continue
        options.append(arg)
        if takes_value[name] and name == arg:
            options.extend(itertools.islice(rest, 1))  # its value (click reports a missing one)
    return [*options, "--", " ".join(words)] if words else options


# -- find ---------------------------------------------------------------------------------------


@click.command("find", cls=PatternCommand)
@click.argument("pattern", metavar="PATTERN...")
@host_options
@FORMAT
@log_options
@click.pass_obj
def find_command(env: Environment, pattern: str, host_args: HostArgs, fmt: str) -> int:
    """List the processes whose command line matches PATTERN, on every host.

    PATTERN is a Python regular expression searched in the full command line (as `pgrep -f`);
    several words are one pattern, joined by single spaces (options are told apart by their
    exact names; put the pattern after `--` to be sure). An empty one lists everything. Only
    the SSH user's processes are listed, never anet's own. Exit status: 0 when something
    matched, 1 when nothing did, 3 when a host could not be asked.
    """
    _check_pattern(pattern)
    answers = run_async(_ask(_machines(host_args, env), lambda m: m.find(pattern)))
    rows = [(a.host, p) for a in answers for p in a.processes]
    if fmt == "jsonl":
        _jsonl(env, [_process_record(host, p) for host, p in rows] + _errors(answers))
    else:
        header = ("HOST", "PID", "USER", "ELAPSED", "%CPU", "%MEM", "COMMAND")
        table = [
            (host, p.pid, p.user, elapsed_text(p.elapsed), f"{p.cpu:.1f}", f"{p.mem:.1f}",
             p.command)
            for host, p in rows
        ]  # fmt: skip
        if table:
            _write(env, _table(header, table))
    down = _report_down(env, answers) if fmt != "jsonl" else _count_down(answers)
    if down:
        return Status.INCOMPLETE
    return Status.OK if rows else _no_match(env, pattern, fmt)


def _no_match(env: Environment, pattern: str, fmt: str) -> Status:
    if fmt != "jsonl":
        env.stderr.write(logs.line(f"no process matches {pattern!r}", pattern=pattern))
    return Status.NO_MATCH


def _check_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"bad pattern {pattern!r}: {exc}") from None


def _check_kill_pattern(pattern: str) -> None:
    """killall never takes a pattern that matches every process: empty, blank, `.*`, `^`."""
    regex = _check_pattern(pattern)
    if not pattern.strip() or regex.search("") is not None:
        raise UsageError(
            f"refusing to kill with the pattern {pattern!r}: it matches every process of "
            "yours; name what to kill"
        )


def _process_record(host: str, p: Any) -> dict[str, Any]:
    return {
        "host": host, "pid": p.pid, "user": p.user, "elapsed": p.elapsed, "cpu": p.cpu,
        "mem": p.mem, "rss_kb": p.rss_kb, "group": p.group, "command": p.command,
        "lifeline": p.lifeline or None,
    }  # fmt: skip


def _errors(answers: Sequence[HostProcesses | HostKills | HostCheck]) -> list[dict[str, Any]]:
    return [{"host": a.host, "error": a.error} for a in answers if a.error is not None]


def _count_down(answers: Sequence[Any]) -> int:
    return sum(a.error is not None for a in answers)


# -- killall ------------------------------------------------------------------------------------


@click.command("killall", cls=PatternCommand)
@click.argument("pattern", metavar="PATTERN...")
@host_options
@click.option("--dry-run", "-n", is_flag=True, help="Show what would be killed; kill nothing.")
@click.option(
    "--force", is_flag=True,
    help="Also kill what keeps your sessions alive: login shells, terminals, tmux, screen, "
    "agents, Jupyter, VS Code servers.",
)  # fmt: skip
@click.option(
    "--signal", "-s", "sig", default="TERM", show_default=True, metavar="SIG",
    help="Signal to send first (name or number).",
)  # fmt: skip
@click.option(
    "--grace", type=common.FiniteFloat(min=0), default=5.0, show_default=True,
    metavar="SECONDS",
    help="Time to die before survivors get KILL (after TERM, INT, HUP or QUIT only).",
)  # fmt: skip
@FORMAT
@log_options
@click.pass_obj
def killall_command(
    env: Environment,
    pattern: str,
    host_args: HostArgs,
    dry_run: bool,
    force: bool,
    sig: str,
    grace: float,
    fmt: str,
) -> int:
    """Kill the processes whose command line matches PATTERN, on every host.

    The same match as `anet find` (a pattern matching everything is refused); a match that
    leads a process group (a job and its children) is killed as a group. anet's own
    dispatcher, its SSH session, your shell, its pipeline and other users' processes are never
    touched. When a match keeps one of your sessions alive (a login shell, tmux, Jupyter...),
    nothing is killed anywhere without --force: the matches are listed instead. Exit status:
    0 when every match is dead, 1 when nothing matched, 3 when a host could not be asked or a
    process survived, 4 when refused for want of --force.
    """
    _check_kill_pattern(pattern)
    number = _signal_number(sig)
    answers = run_async(
        _ask(
            _machines(host_args, env),
            lambda m: m.killall(pattern, sig=number, grace=grace, dry_run=dry_run, force=force),
        )
    )
    rows = [(a.host, k) for a in answers for k in a.kills]
    if fmt == "jsonl":
        records = [{**_process_record(h, k.process), "result": k.outcome} for h, k in rows]
        _jsonl(env, records + _errors(answers))
    elif rows:
        header = ("HOST", "PID", "USER", "COMMAND", "RESULT")
        table = [
            (h, k.process.pid, k.process.user, _with_group(k.process), k.outcome) for h, k in rows
        ]
        _write(env, _table(header, table))
    if fmt != "jsonl":
        _report_down(env, answers)
    if any(a.refused for a in answers):
        return _refused(env, answers) if fmt != "jsonl" else Status.REFUSED
    if not all(a.complete for a in answers):
        return Status.INCOMPLETE
    return Status.OK if rows else _no_match(env, pattern, fmt)


def _refused(env: Environment, answers: Sequence[HostKills]) -> Status:
    """One line per host whose matches keep a session alive, then what to do about it."""
    for a in answers:
        if a.lifelines:
            what = ", ".join(sorted({k.process.lifeline for k in a.lifelines}))
            said = f"{len(a.lifelines)} of {len(a.kills)} matches keep your sessions alive"
            env.stderr.write(logs.line(f"{a.host}: {said} ({what})", "warning", host=a.host))
    env.stderr.write(
        logs.line("nothing was killed: narrow the pattern, or add --force to kill these too")
    )
    return Status.REFUSED


def _with_group(p: Any) -> str:
    command = p.command if len(p.command) <= 60 else p.command[:57] + "..."
    return f"{command} (group of {p.group})" if p.group > 1 else command


# -- onall --------------------------------------------------------------------------------------


@click.command("onall", context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1, required=True)
@host_options
@click.option("--no-fold", is_flag=True, help="One block per host, even for identical outputs.")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "jsonl"]), default="text", show_default=True,
    help="Grouped text for people, or one JSON object per host.",
)  # fmt: skip
@log_options
@click.pass_obj
def onall_command(
    env: Environment, command: tuple[str, ...], host_args: HostArgs, no_fold: bool, fmt: str
) -> int:
    """Run COMMAND once on every host; show each host's output and exit status.

    Hosts with identical output and status are shown together (as `clush -b`). COMMAND runs
    with `sh -c` in the home directory (the current one for the local machine). The exit
    status is the number of hosts where it failed or could not run (at most 101).
    """
    line = " ".join(command)
    answers = run_async(_ask(_machines(host_args, env), lambda m: m.onall(line)))
    if fmt == "jsonl":
        _jsonl(env, [_output_record(a) for a in answers])
    else:
        _write_folded(env, answers, folded=not no_fold)
    return min(sum(not a.ok for a in answers), ExitStatus.MAX_FAILED)


def _output_record(a: HostOutput) -> dict[str, Any]:
    return {
        "host": a.host, "exit": a.exit_code, "signal": a.signal, "error": a.error,
        "stdout": a.stdout.decode(errors="replace"), "stderr": a.stderr.decode(errors="replace"),
    }  # fmt: skip


def fold(answers: Sequence[HostOutput]) -> list[tuple[list[str], HostOutput]]:
    """Hosts grouped by identical (stdout, stderr, status), in the order each first appears."""
    groups: dict[tuple[bytes, bytes, str], tuple[list[str], HostOutput]] = {}
    for a in answers:
        groups.setdefault((a.stdout, a.stderr, a.status), ([], a))[0].append(a.host)
    return list(groups.values())


def _write_folded(env: Environment, answers: Sequence[HostOutput], *, folded: bool) -> None:
    groups = fold(answers) if folded else [([a.host], a) for a in answers]
    for hosts, a in groups:
        count = f" ({len(hosts)} hosts)" if len(hosts) > 1 else ""
        _write(env, f"== {', '.join(fold_hostlist(hosts))}{count}: {printable(a.status)} ==\n")
        for data in (a.stdout, a.stderr):  # raw: what the user asked to see, as ssh shows it
            if data:
                env.stdout.write(data if data.endswith(b"\n") else data + b"\n")
    env.stdout.flush()


# -- hosts check and scan -------------------------------------------------------------------


@click.group("hosts")
def hosts_group() -> None:
    """Check the hosts, and find new ones."""


@hosts_group.command("check")
@host_options
@click.option(
    "--write-ok", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
    help="Write the usable hosts to FILE, one a line: a hosts file for -H.",
)  # fmt: skip
@click.option(
    "--timeout", type=common.FiniteFloat(min=0.1), default=10.0, show_default=True,
    metavar="SECONDS", help="Give up connecting to a host after this long.",
)  # fmt: skip
@FORMAT
@log_options
@click.pass_obj
def check_command(
    env: Environment, host_args: HostArgs, write_ok: Path | None, timeout: float, fmt: str
) -> int:
    """Probe every host: reachable, key login, host key, python3, cores, load, memory, disk.

    Exit status: 0 when every host is usable, 3 otherwise.
    """
    machines = _machines(host_args, env, timeout)
    specs = [state.spec for state in machines.hosts.values()]
    answers = run_async(_ask(machines, lambda m: m.check()))
    return _report_checks(env, answers, specs, write_ok, fmt)


def _report_checks(
    env: Environment,
    answers: Sequence[HostCheck],
    specs: Sequence[HostSpec],
    write_ok: Path | None,
    fmt: str,
) -> int:
    if fmt == "jsonl":
        _jsonl(env, [_check_record(a) for a in answers])
    else:
        _write(env, _table(CHECK_HEADER, [_check_row(a) for a in answers]))
    if write_ok is not None:
        by_label = {spec.label: spec for spec in specs}
        lines = [by_label[a.host].text for a in answers if a.ok]
        try:
            write_ok.write_text("".join(f"{line}\n" for line in lines))
        except OSError as exc:
            raise UsageError(f"cannot write {write_ok}: {exc.strerror}") from None
    return Status.OK if all(a.ok for a in answers) else Status.INCOMPLETE


CHECK_HEADER = (
    "HOST", "STATUS", "KEY", "AUTH", "PYTHON", "CORES", "LOAD", "MEM FREE", "DISK FREE", "PROBLEM",
)  # fmt: skip


def _check_row(a: HostCheck) -> tuple[object, ...]:
    auth = {True: "yes", False: "NO", None: "-"}[a.auth]
    load = f"{a.load:.2f}" if a.load is not None else "-"
    return (
        a.host, "ok" if a.ok else "FAILED", a.key or "-", auth, a.python or "-", a.cores or "-",
        load, _size(a.mem_free_kb), _size(a.disk_free_kb), a.error or "",
    )  # fmt: skip


def _check_record(a: HostCheck) -> dict[str, Any]:
    return {
        "host": a.host, "ok": a.ok, "key": a.key, "auth": a.auth, "python": a.python,
        "cores": a.cores, "load": a.load, "mem_free_kb": a.mem_free_kb,
        "disk_free_kb": a.disk_free_kb, "hostname": a.hostname, "error": a.error,
    }  # fmt: skip


@hosts_group.command("scan")
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "-p", "--port", "ports", multiple=True, type=click.IntRange(1, 65535), metavar="PORT",
    help="SSH port to try (repeatable). Default: 22.",
)  # fmt: skip
@click.option("--user", "-l", help="Log in as USER on the hosts found (default: ssh config).")
@click.option(
    "--timeout", type=common.FiniteFloat(min=0.05), default=SCAN_TIMEOUT, show_default=True,
    metavar="SECONDS", help="Per address: time to connect and read the SSH banner.",
)  # fmt: skip
@click.option(
    "--concurrency", type=click.IntRange(min=1), default=SCAN_CONCURRENCY, show_default=True,
    help="Addresses probed at once.",
)  # fmt: skip
@click.option("--no-check", is_flag=True, help="Only list the SSH servers found.")
@click.option(
    "--write-ok", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
    help="Write the usable hosts found to FILE, one a line: a hosts file for -H.",
)  # fmt: skip
@common.ssh_config_option
@click.option("--accept-new-hosts", is_flag=True, help="Record the keys of new hosts found.")
@FORMAT
@log_options
@click.pass_obj
def scan_command(
    env: Environment,
    targets: tuple[str, ...],
    ports: tuple[int, ...],
    user: str | None,
    timeout: float,
    concurrency: int,
    no_check: bool,
    write_ok: Path | None,
    ssh_config: Path | None,
    accept_new_hosts: bool,
    fmt: str,
) -> int:
    """Find SSH servers in TARGETS (10.0.0.0/24, 10.0.0.[1-40], node[01-40]), then check them.

    Exit status: 0 when servers were found (and all are usable), 1 when none answered,
    3 when some found are not usable.
    """
    addresses = expand_targets(targets)
    found = run_async(_scan(addresses, ports or (22,), timeout, concurrency))
    if not found:
        env.stderr.write(logs.line(f"no SSH server answered at {len(addresses)} address(es)"))
        return Status.NO_MATCH
    specs = [parse_spec(f"{user}@{s.spec}" if user else s.spec) for s in found]
    if no_check:
        rows = [(spec.label, server.banner) for spec, server in zip(specs, found, strict=True)]
        if fmt == "jsonl":
            _jsonl(env, [{"host": host, "banner": banner} for host, banner in rows])
        else:
            _write(env, _table(("HOST", "BANNER"), rows))
        return Status.OK
    host_args = HostArgs(tuple(sp.label for sp in specs), (), None, ssh_config, accept_new_hosts)
    machines = _machines(host_args, env, max(timeout, 10.0))
    answers = run_async(_ask(machines, lambda m: m.check()))
    return _report_checks(env, answers, specs, write_ok, fmt)


async def _scan(
    addresses: Sequence[str], ports: Sequence[int], timeout: float, concurrency: int
) -> list[Any]:
    return await scan(addresses, ports, timeout=timeout, concurrency=concurrency)


COMMANDS = (find_command, killall_command, onall_command, hosts_group)
"""What anet.cli adds to the `anet` group."""
