"""asyncssh, loaded when the first SSH host needs it, and its ssh config read once per run.

Importing asyncssh costs about 0.1 s (its crypto and OpenSSL bindings): a run on this machine
alone, `anet --version` and the report never need it, so nothing imports it at module level;
`asyncssh()` is the one door. Its exception classes are needed where a channel may fail:
`channel_errors()` names them only once asyncssh is loaded (until then none can be raised).

asyncssh parses the whole ssh config again for every host it resolves, twice per host here
(which machine it is, then its connection options), since `Host` blocks are matched while
parsing. With one block per host that is O(hosts x config lines): at 64 hosts, 2.0 of the
master's 4.7 CPU s of start-up (cProfile), the greater part in tokenising lines (`shlex`)
that are the same every time. `_parse` is asyncssh's `SSHConfig.parse` with the tokenising
done once per file (per file version: its path, size and mtime); matching and the options
themselves stay asyncssh's own, host by host. Installed only when asyncssh's config class has
the parts it relies on; otherwise asyncssh's own parse runs, slower but the same.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

Line = tuple[int, str, tuple[str, ...] | str]
"""(line number, option in lower case, its arguments; or the tokenising error's text)."""

_NEEDS = ("_handlers", "_conditionals", "_no_split", "_percent_expand", "_set_tokens",
          "_expand_val", "_error")  # fmt: skip

stock_parse: Any = None
"""asyncssh's own `SSHConfig.parse`, kept (tests compare the two)."""


@functools.cache
def asyncssh() -> ModuleType:
    """The asyncssh package, imported on first use, its config files tokenised once."""
    import ctypes.util

    stock_find, ctypes.util.find_library = ctypes.util.find_library, find_library_quickly
    try:
        import asyncssh as module
        import asyncssh.config
    finally:
        ctypes.util.find_library = stock_find

    global stock_parse
    config_class: Any = asyncssh.config.SSHConfig
    if stock_parse is None and all(hasattr(config_class, name) for name in _NEEDS):
        stock_parse, config_class.parse = config_class.parse, _parse
    return module


LOADER_CACHE = "/etc/ld.so.cache"


def find_library_quickly(name: str) -> str | None:
    """`ctypes.util.find_library` without starting a process, for asyncssh's import.

    asyncssh looks for liboqs (as `oqs`, then `liboqs`) and for nettle when it is imported. On
    Linux each lookup runs `ldconfig -p`, and for a library that is not there (liboqs, mostly)
    gcc and ld besides, to link a test program: seven processes, 0.13-0.23 s of a one-job run
    on the test machine. `ldconfig -p` lists what the loader's cache holds, so the cache file
    is searched here for the same name, checked by loading it (a 32-bit entry is no answer);
    without that file (musl), ctypes' own lookup answers. What only gcc's or ld's lookup
    could have found (a library outside the cache) is not found: asyncssh then does without
    that algorithm, as on a host without the library.
    """
    import ctypes
    import ctypes.util
    import re

    try:
        with open(LOADER_CACHE, "rb") as cache:
            names = cache.read()
    except OSError:
        return ctypes.util.find_library(name)
    pattern = rb"(?<=[\0/])lib%s\.so((?:\.[0-9]+)*)(?=\0)" % re.escape(name.encode())
    versions = {tuple(int(n) for n in v.split(b".")[1:]) for v in re.findall(pattern, names)}
    for version in sorted(versions, reverse=True):  # ldconfig's order: the highest first
        soname = ".".join([f"lib{name}.so", *map(str, version)])
        try:
            ctypes.CDLL(soname)
        except OSError:
            continue
        return soname
    return None


def channel_errors() -> tuple[type[BaseException], ...]:
    """What a failing SSH or pipe channel raises: OSError, and asyncssh.Error once loaded."""
    loaded = sys.modules.get("asyncssh")
    return (OSError,) if loaded is None else (OSError, loaded.Error)


def _parse(self: Any, path: Path) -> None:
    """asyncssh's SSHConfig.parse (2.14 to 2.24), reading tokenised lines from `_lines`."""
    self._path = path
    self._line_no = 0
    self._matching = True
    self._tokens = {"%": "%"}
    stat = os.stat(path)
    kinds = frozenset(self._no_split), frozenset(self._conditionals)
    for number, loption, args in _lines(str(path), stat.st_mtime_ns, stat.st_size, *kinds):
        self._line_no = number
        if isinstance(args, str):
            self._error(args)
        if not self._matching and loption not in self._conditionals:
            continue
        try:
            option, handler = self._handlers[loption]
        except KeyError:
            continue
        left = list(args)
        if not left:
            self._error(f"Missing {option} value")
        handler(self, option, left)
        if left:
            self._error(f"Extra data at end: {' '.join(left)}")
    self._set_tokens()
    for option in self._percent_expand:
        value = self._options.get(option)
        if isinstance(value, list):
            self._options[option] = [self._expand_val(item) for item in value]
        elif isinstance(value, str):
            self._options[option] = self._expand_val(value)


@functools.lru_cache(maxsize=64)
def _lines(
    path: str, mtime_ns: int, size: int, no_split: frozenset[str], conditionals: frozenset[str]
) -> tuple[Line, ...]:
    """A config file's lines as asyncssh tokenises them, once per version of the file."""
    del mtime_ns, size  # the cache key: a changed file is read again
    found: list[Line] = []
    with open(path) as file:
        for number, raw in enumerate(file, 1):
            line = raw.strip()
            if line and line[0] != "#":
                found.append(_tokenise(number, line, no_split, conditionals))
    return tuple(found)


def _tokenise(
    number: int, line: str, no_split: frozenset[str], conditionals: frozenset[str]
) -> Line:
    """One line: `Option value`, `Option=value` and `Option = value` alike (asyncssh's rules)."""
    try:
        split = shlex.split(line)
    except ValueError as exc:
        return number, "", str(exc)
    args: list[str] = []
    loption = ""
    allow_equal = True
    for i, arg in enumerate(split, 1):
        if arg.startswith("="):
            if len(arg) > 1:
                args.append(arg[1:])
        elif not allow_equal:
            args.extend(split[i - 1 :])
            break
        elif arg.endswith("="):
            args.append(arg[:-1])
        elif "=" in arg:
            arg, val = arg.split("=", 1)
            args += [arg, val]
        else:
            args.append(arg)
        if i == 1:
            loption = args.pop(0).lower()
            allow_equal = loption in conditionals
    if loption in no_split:
        args = [line.lstrip()[len(loption) :].strip()]
    return number, loption, tuple(args)


def config_paths(config: Path | None) -> list[str]:
    """The ssh config files a connection reads: `config` (--ssh-config) in place of
    ~/.ssh/config, else that file if there is one."""
    if config is not None:
        return [str(config)]
    default = Path.home() / ".ssh" / "config"
    return [str(default)] if default.is_file() else []


CLIENT_NO_SPLIT = frozenset({"proxycommand", "remotecommand"})
CLIENT_CONDITIONALS = frozenset({"host", "match"})
"""asyncssh's `SSHClientConfig._no_split` and `_conditionals` (a test compares them): the key
under which `_lines` keeps a config file's lines, so that the lines `direct_address` reads
before asyncssh is imported are the ones its parse reads later, tokenised once."""

BEYOND_HOST_BLOCKS = frozenset(
    {"match", "include", "canonicalizehostname", "addressfamily", "bindaddress", "bindinterface"}
)
"""Options after which `direct_address` cannot tell where, or how, asyncssh will connect."""


def direct_address(host: str, port: int | None, paths: Sequence[str]) -> tuple[str, int] | None:
    """The (HostName, Port) an ssh connection to `host` opens its TCP connection to, read from
    the config's `Host` blocks without asyncssh, first value winning as in OpenSSH; None when
    the connection goes through a jump host or a proxy command, or when the config holds more
    than Host blocks can say (`BEYOND_HOST_BLOCKS`, a `%` token in HostName). A guess made
    before asyncssh is loaded: the Connector uses a socket opened to it only if asyncssh's own
    reading of the config gives the same host and port (anet/remote/preconnect.py)."""
    found: dict[str, str] = {}
    for path in paths:
        try:
            stat = os.stat(path)
            kinds = CLIENT_NO_SPLIT, CLIENT_CONDITIONALS
            lines = _lines(path, stat.st_mtime_ns, stat.st_size, *kinds)
        except (OSError, UnicodeDecodeError):
            return None
        matching = True
        for _, option, args in lines:
            if isinstance(args, str) or option == "match":
                return None  # a line asyncssh refuses, or a condition only it evaluates
            if option == "host":
                matching = _host_matches(",".join(args), host)
            elif matching and option in BEYOND_HOST_BLOCKS:
                return None
            elif matching and args:
                found.setdefault(option, args[0])
    via = found.get("proxyjump", "none"), found.get("proxycommand", "none")
    name = found.get("hostname", host)
    if any(value.lower() != "none" for value in via) or "%" in name:
        return None
    try:
        return name, port or int(found.get("port", "22"))
    except ValueError:
        return None


def _host_matches(patterns: str, host: str) -> bool:
    """asyncssh's `WildcardPatternList(patterns).matches(host)`: a `Host` line's patterns,
    `!` negating, `*` and `?` wildcards (brackets match themselves)."""
    positive = False
    for pattern in patterns.split(","):
        negate = pattern.startswith("!")
        escaped = "".join({"[": "[[]", "]": "[]]"}.get(ch, ch) for ch in pattern[negate:])
        if fnmatch.fnmatch(host, escaped):
            if negate:
                return False
            positive = True
    return positive
