"""Every wire message class, whichever tests were collected first.

A message class joins the registry (``dispatcher.protocol._CLASSES``) when its module is
imported, so a list built from the registry at collection time held whatever the earlier test
modules happened to import: a test module parametrized from it ran a different number of
cases alone than in the whole suite. Importing every module of the dispatcher package first
makes the list the same in every order (no module outside it defines messages: the dispatcher
imports nothing from anet).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import dispatcher
from dispatcher.protocol import _CLASSES


def every_message() -> list[type[Any]]:
    """Every registered message class, by CODE."""
    for module in pkgutil.iter_modules(dispatcher.__path__):
        importlib.import_module(f"dispatcher.{module.name}")
    return sorted(_CLASSES, key=lambda cls: cls.CODE)
