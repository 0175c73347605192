"""Where the verb is in `anet`'s words: options may come before it, as GNU parallel's do.

`anet -H hosts.txt --find x`, `anet -q run batch.txt` and `anet -S : --onall 'echo hi'` say
what `anet find -H hosts.txt x`, `anet run -q batch.txt` and `anet onall -S : 'echo hi'` say.
`arrange()` finds the verb behind the leading options and moves those options after it, where
the command's own parser takes them in any order; an option the command does not have is then
its error ("anet: status: No such option: -q"). To step over an option's value (`-H run` names
a hosts file, not the `run` command) it must know which options take one: `VALUE_OPTIONS`
(anet/argscan.py, which the entry point reads the words with before click is imported),
written out so that no subcommand's module has to be imported to parse the words (a test
checks it against `option_table()`, which reads the commands themselves).

A word naming a command is that command, except when nothing follows it that the command could
work on and a file of that name exists: `anet status` alone would only be a usage error, so
with a batch file `status` here it runs that file. `anet run status` or `anet -- status` always
run it; `anet status batch.txt` always asks about batch.txt's run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import click

from ..argscan import VALUE_OPTIONS, values_after
from ..core.inputs import MARKERS

DEFAULT_COMMAND = "run"
COMMAND_LINE = "anet.command_line"
"""Where the group keeps command mode's split line for `run` (click's context meta)."""
OPTION_COMMANDS = {"--find": "find", "--killall": "killall", "--onall": "onall"}
"""Options that name a command, as the original ANet and GNU parallel spell them."""
GROUP_OPTIONS = ("-h", "--help", "--version")
"""The `anet` group's own options: `anet --help` is about anet, not about `run`."""


@dataclass(frozen=True, slots=True)
class Arranged:
    """The words in the order click parses them; `shadowed`: a file named like the command
    chosen (a batch the user may have meant), for the hint in that command's error."""

    argv: list[str]
    shadowed: str | None = None


def option_table(group: click.Group) -> dict[str, bool]:
    """Every option name of every command (and subcommand) -> whether it takes a value."""
    table: dict[str, bool] = {name: False for name in GROUP_OPTIONS}
    for command in _commands(group):
        for param in command.params:
            if isinstance(param, click.Option):
                for name in (*param.opts, *param.secondary_opts):
                    table[name] = not (param.is_flag or param.count)
    return table


def _commands(group: click.Group) -> Iterable[click.Command]:
    for command in group.commands.values():
        yield command
        if isinstance(command, click.Group):
            yield from _commands(command)


def arrange(
    args: Sequence[str],
    commands: Mapping[str, click.Command],
    takes_value: Mapping[str, bool],
    is_file: Callable[[str], bool] = os.path.isfile,
) -> Arranged:
    """`args` with the verb first and the options that came before it right after it."""
    args = list(args)
    at = _skip_options(args, 0, takes_value)
    leading = args[:at]
    if at == len(args):  # options only: anet's own (--help, --version), else `run`'s
        if all(arg in GROUP_OPTIONS for arg in leading):
            return Arranged(args)
        return Arranged([DEFAULT_COMMAND, *args])
    if "--version" in leading:
        return Arranged(args)  # the group prints its version, whatever follows
    word, rest = args[at], args[at + 1 :]
    verb = OPTION_COMMANDS.get(word) or (word if word in commands else None)
    if verb is None:  # a batch, or `--` before one
        return Arranged([DEFAULT_COMMAND, *leading, *args[at:]])
    shadowed = word if verb == word and is_file(word) else None
    if shadowed and _needs_argument(commands[verb]) and not _has_positional(rest, takes_value):
        return Arranged([DEFAULT_COMMAND, *leading, word, *rest])  # `anet status`: the file
    return Arranged([verb, *leading, *rest], shadowed if verb != DEFAULT_COMMAND else None)


@dataclass(frozen=True, slots=True)
class CommandLine:
    """GNU parallel's command line: the command's words, then the sources' (from a marker)."""

    command: list[str]
    sources: list[str]


ARG_FILE = ("-a", "--arg-file")


def split_command(
    args: Sequence[str], commands: Mapping[str, click.Command], takes_value: Mapping[str, bool]
) -> tuple[list[str], CommandLine | None]:
    """(`run` and its options, the command line) in command mode, else (`args`, None).

    Command mode is a marker word after the options, or `-a`/`--arg-file` among them. A first
    word naming one of anet's commands is that command (`anet find`): `anet run find {} ::: d`
    or `anet -- find {} ::: d` runs find(1).
    """
    args = list(args)
    at = _skip_options(args, 0, takes_value)
    options = args[:at]
    run = args[at : at + 1] == [DEFAULT_COMMAND]
    if run:  # `anet run -a f cmd`, `anet -j2 run find {} ::: a`
        end = _skip_options(args, at + 1, takes_value)
        options, at = options + args[at + 1 : end], end
    rest = args[at:]
    if rest[:1] and (rest[0] in OPTION_COMMANDS or (rest[0] in commands and not run)):
        return args, None  # `anet --onall 'echo {}' ::: a`, `anet sync ...`: those commands
    arg_file = any(a in ARG_FILE or a.startswith(("--arg-file=", "-a")) for a in options)
    marker = next((i for i, word in enumerate(rest) if word in MARKERS), None)
    if marker is None and not arg_file:
        return args, None
    marker = len(rest) if marker is None else marker
    command = rest[1:marker] if rest[:1] == ["--"] else rest[:marker]
    return [DEFAULT_COMMAND, *options], CommandLine(command, rest[marker:])


def _skip_options(args: Sequence[str], at: int, takes_value: Mapping[str, bool]) -> int:
    """The index of the first word that is not an option or an option's value."""
    while at < len(args):
        arg = args[at]
        if arg == "--" or arg == "-" or not arg.startswith("-") or arg in OPTION_COMMANDS:
            return at
        at += 1 + values_after(arg, takes_value)
    return at


def _has_positional(args: Sequence[str], takes_value: Mapping[str, bool]) -> bool:
    at = _skip_options(args, 0, takes_value)
    return at < len(args) and (args[at] != "--" or at + 1 < len(args))


def _needs_argument(command: click.Command) -> bool:
    """Whether the command alone is a usage error (`anet status`), unlike `anet hosts`. `run`'s
    BATCH is optional only for command mode, which `split_command` has taken out before."""
    required = any(isinstance(p, click.Argument) and p.required for p in command.params)
    return required or command.name == DEFAULT_COMMAND


EARLY_STOPS = frozenset(["-h", "--help", "--version", "--dry-run", "--pool"])
"""Options after which no job runs here, or not from this process: no early dispatcher."""


def names_this_machine(args: Sequence[str], commands: Mapping[str, click.Command]) -> bool | None:
    """Whether `anet ARGS` is a run on this machine, read before click parses it: True when
    a -S spec is this machine (`:`, `N/:`), None when the run names no hosts (-S, -H: this
    machine unless $ANET_HOSTS or a pool says otherwise), False otherwise (another command,
    other hosts, --help, --dry-run). A wrong answer only costs time, never a behaviour: the
    early dispatcher (anet/remote/early.py) of a run that does not take it is stopped."""
    args, _ = split_command(args, commands, VALUE_OPTIONS)
    words = arrange(args, commands, VALUE_OPTIONS).argv
    if words[:1] != [DEFAULT_COMMAND]:
        return False
    specs, files = _host_words(words[1:])
    if specs is None:
        return False
    if any(part.rpartition("/")[2] == ":" for spec in specs for part in spec.split(",")):
        return True
    return None if not specs and not files else False


def _host_words(words: Sequence[str]) -> tuple[list[str] | None, bool]:
    """The -S values, and whether -H came, in `run`'s words; (None, _) at an EARLY_STOPS."""
    specs: list[str] = []
    files = False
    at = 0
    while at < len(words) and words[at] != "--":
        word = words[at]
        name, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if name in EARLY_STOPS:
            return None, files
        if word.startswith("--"):
            taken = not equals and VALUE_OPTIONS.get(name, False)
            value = words[at + 1] if taken and at + 1 < len(words) else value
        elif word.startswith("-") and len(word) > 1:
            name, value, taken = _short_option(word, words[at + 1 : at + 2])
            if name == "-h":
                return None, files
        else:
            name, taken = "", False
        if name in ("-S", "--host"):
            specs.append(value)
        files = files or name in ("-H", "--hosts")
        at += 1 + taken
    return specs, files


def _short_option(word: str, following: Sequence[str]) -> tuple[str, str, bool]:
    """In a short cluster (`-qS :`, `-S:`): the option that takes a value (or the last flag),
    its value, and whether that value is the next word, as click reads the cluster."""
    for i, letter in enumerate(word[1:], start=1):
        name = f"-{letter}"
        if letter == "h" or VALUE_OPTIONS.get(name, False):
            if letter == "h":
                return name, "", False
            rest = word[i + 1 :]
            if rest:
                return name, rest, False
            return name, following[0] if following else "", bool(following)
    return word[-2:], "", False
