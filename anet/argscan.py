"""`anet`'s words read before click is imported: which command, which options take a value,
and the hosts a run or a sync surely goes to.

`anet`'s entry point (anet/launch.py) reads the arguments with `ssh_hosts` to connect to those
hosts while the rest of anet is imported (anet/remote/earlyssh.py): nothing here may import
click, the CLI's modules or anything of the run (`python3 -X importtime -m anet ...`). The CLI
(anet/cli/argv.py) parses with the same tables, so there is one reading of the options.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

COMMANDS = {
    "run": ("run", "run_command"),
    "status": ("report", "status_command"),
    "report": ("report", "report_command"),
    "completion": ("report", "completion_command"),
    "journals": ("journals", "journals_group"),
    "find": ("machines", "find_command"),
    "killall": ("machines", "killall_command"),
    "onall": ("machines", "onall_command"),
    "hosts": ("machines", "hosts_group"),
    "sync": ("sync", "sync_command"),
    "up": ("pool", "up_command"),
    "pool": ("pool", "pool_command"),
    "down": ("pool", "down_command"),
    "submit": ("pool", "submit_command"),
    "ls": ("pool", "ls_command"),
    "attach": ("pool", "attach_command"),
    "wait": ("pool", "wait_command"),
    "cancel": ("pool", "cancel_command"),
}
"""Each subcommand's module and name. A module is imported when its command is used (or for
`--help`): `anet run` never loads the report's, `anet --version` none."""


VALUE_OPTIONS: Mapping[str, bool] = dict.fromkeys(
    [
        "-S", "--host", "-H", "--hosts", "-j", "--slots", "--ssh-config", "--format",
        "--keepalive", "--retries", "--timeout", "--halt", "--nice", "--max-load", "--memfree",
        "--yield-idle", "--yield-move", "--journal", "--joblog", "--results", "--max-output", "-o",
        "--output", "--older-than", "--signal", "-s", "--grace", "--write-ok", "-p", "--port",
        "--user", "-l", "--concurrency", "--pool", "--via", "-a", "--arg-file", "--colsep",
        "--deps", "--block", "--recend", "--recstart", "--header", "--transferfile", "--tf",
        "--return", "--trc", "-N", "--max-replace-args", "--priority",
    ],
    True,
)  # fmt: skip
"""The options of every command that take a value (any other option is a flag): what
`option_table()` finds in the commands, kept here (tests/test_cli_order.py checks it)."""


def values_after(arg: str, takes_value: Mapping[str, bool]) -> int:
    """1 when the option's value is the next word, else 0 (`--name=value`, `-j4`, a flag).

    A short cluster (`-qH FILE`) is read as click reads it: flags until one that takes a value,
    whose value is the rest of the word or else the next word. An unknown option counts as a
    flag: the command it reaches will name it.
    """
    if arg.startswith("--"):
        return int("=" not in arg and takes_value.get(arg, False))
    for i, letter in enumerate(arg[1:], start=1):
        if takes_value.get(f"-{letter}", False):
            return int(i == len(arg) - 1)
    return 0


EARLY_SSH_COMMANDS = ("run", "sync")
"""The commands whose hosts `ssh_hosts` may name for an early connection."""


RUN_ONLY_OPTIONS = frozenset(
    {
        "-q", "--quiet", "-k", "--keep-order", "--no-journal", "--line-buffer", "--tag",
        "-j", "--slots", "--format", "--retries", "--timeout", "--journal", "--joblog",
        "--results", "--max-output",
    }
)  # fmt: skip
"""Options `ssh_hosts` may pass over: they change how a run goes, not which hosts it reaches
or how it connects to them (unlike --keepalive, --accept-new-hosts, --dry-run, --pool...)."""


class EarlyHosts(NamedTuple):
    """The hosts a command line surely goes to, as typed (`ssh_hosts`)."""

    specs: list[str]  # -S
    sources: list[str]  # -H: hosts files, inventories, `slurm`
    config: str | None  # --ssh-config
    batch: str | None = None  # the batch file of a run (None: a sync's deps)


def ssh_hosts(args: Sequence[str], verbs: Collection[str]) -> EarlyHosts | None:
    """The hosts of `anet [run] -S H... -H F... [--ssh-config C] BATCH` or `anet sync ...
    DEPS`, read before click parses it, for the connections started while the run's modules
    are imported (anet/remote/earlyssh.py); None for anything else. Strict on purpose: an
    option other than those and RUN_ONLY_OPTIONS, a second word after the command (command
    mode: `cmd ::: a`) or none, a verb (`verbs`) where the batch goes when `run` is unsaid,
    and the answer is None, since an early connection is only worth making to the hosts the
    run surely goes to, as it will connect to them."""
    if not args:
        return None
    said = args[0] in EARLY_SSH_COMMANDS
    specs: list[str] = []
    sources: list[str] = []
    config: str | None = None
    words: list[str] = []
    at = 1 if said else 0
    while at < len(args):
        word = args[at]
        name, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if word.startswith("-S") and len(word) > 2:
            name, value, equals = "-S", word[2:], "="
        elif word.startswith("-H") and len(word) > 2:
            name, value, equals = "-H", word[2:], "="
        if name in ("-S", "--host", "-H", "--hosts", "--ssh-config"):
            if not equals:
                if at + 1 == len(args):
                    return None
                at, value = at + 1, args[at + 1]
            if name == "--ssh-config":
                config = value
            else:
                (specs if name in ("-S", "--host") else sources).append(value)
        elif name in RUN_ONLY_OPTIONS:  # how the run goes, not where: skipped, with a value
            at += values_after(word, VALUE_OPTIONS)
        elif word.startswith("-"):
            return None
        else:
            words.append(word)
        at += 1
    if not (specs or sources) or len(words) != 1 or (not said and words[0] in verbs):
        return None
    return EarlyHosts(specs, sources, config, None if args[0] == "sync" else words[0])
