"""Frozen records: the wire messages' classes (and the dispatcher's other values), built cheaply.

Every host starts a dispatcher at every run, 4 or 64 of them at once on a busy master's
machine, and with dataclasses most of that boot was building classes: importing dataclasses
(inspect, ast, dis, tokenize: 32 M instructions) and compiling six functions for each of the 31
classes a dispatcher defines at boot (3.2 M instructions each), 57% of the 229 M instructions
of a whole boot (callgrind, Python 3.11). A record does what these classes need and no more:
its annotated fields, in order, are its constructor's arguments (`field()` gives a default
factory or metadata; a `ClassVar` is no field); it is immutable, equal to a record of its own
class with equal fields, hashable when its fields are, and shown with its fields. One function
is compiled per class, its `__init__`, at its first construction (a run builds few of the
classes it defines), and it fills the instance's dict directly: cheaper per message than a
frozen dataclass's `__init__`, which calls `object.__setattr__` per field.

`fields`, `replace` and `values` are dataclasses' `fields`, `replace` and a shallow `astuple`
for records. The wire format does not depend on any of this: a frame is a message's fields in
their order, as before. Python 3.8 compatible, stdlib only.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar

    T = TypeVar("T")

_FIELDS = "__record_fields__"


class _Missing:
    """No default (a sentinel: None is a default like any other)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class FrozenInstanceError(AttributeError):
    """An assignment to a record's field: records are immutable."""


class Field:
    """One field of a record: its name, annotation (text), default or default factory, and
    metadata (a message field's bounds, dispatcher/protocol.py's `bounded`)."""

    __slots__ = ("default", "default_factory", "metadata", "name", "type")

    def __init__(
        self,
        default: Any = MISSING,
        default_factory: Any = MISSING,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> None:
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("a field cannot have both a default and a default factory")
        self.name = ""
        self.type = ""
        self.default = default
        self.default_factory = default_factory
        self.metadata: Dict[str, Any] = dict(metadata or {})

    @property
    def required(self) -> bool:
        return self.default is MISSING and self.default_factory is MISSING

    def __repr__(self) -> str:
        return "Field(%s: %s)" % (self.name, self.type)


def field(
    *,
    default: Any = MISSING,
    default_factory: Any = MISSING,
    metadata: Optional[Dict[str, Any]] = None,
) -> Any:
    """A field's default factory or metadata, as dataclasses' `field`."""
    return Field(default, default_factory, metadata)


def frozen(cls: Type[T]) -> Type[T]:
    """Make `cls` a frozen record of its annotated fields (a record base's fields first)."""
    found: List[Field] = list(getattr(cls, _FIELDS, ()))
    own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 (inspect: 3.10+, and heavy)
    for name, annotation in own.items():
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        if text.startswith(("ClassVar", "typing.ClassVar")):
            continue
        found = [f for f in found if f.name != name]  # redefined here: this one counts
        found.append(_own_field(cls, name, text))
    for before, after in zip(found, found[1:]):  # noqa: RUF007 (pairwise: Python 3.10+)
        if after.required and not before.required:
            raise TypeError(
                "%s: field %r without a default follows one with a default"
                % (cls.__name__, after.name)
            )
    setattr(cls, _FIELDS, tuple(found))
    cls.__init__ = _first_init(cls)  # type: ignore[misc]
    for name, method in _METHODS.items():
        if name not in cls.__dict__:
            setattr(cls, name, method)
    return cls


def _own_field(cls: type, name: str, text: str) -> Field:
    """The Field of `name`, from its class attribute: a `field()`, a plain default, or none.
    As with dataclasses, the class attribute becomes the default (or goes)."""
    value = cls.__dict__.get(name, MISSING)
    made = value if isinstance(value, Field) else Field(default=value)
    made.name, made.type = name, text
    if isinstance(made.default, (list, dict, set)):
        raise ValueError(
            "%s.%s: a mutable default is shared; use default_factory" % (cls.__name__, name)
        )
    if made.default is not MISSING:
        setattr(cls, name, made.default)
    elif isinstance(value, Field):
        delattr(cls, name)
    return made


def _first_init(cls: type) -> Callable[..., None]:
    """`cls.__init__` until the first construction, which compiles the real one in its place."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init = _compiled_init(cls)
        cls.__init__ = init  # type: ignore[misc]
        init(self, *args, **kwargs)

    return __init__


def _compiled_init(cls: type) -> Callable[..., None]:
    """`def __init__(self, a, b=<default>, c=<sentinel>)` storing each argument (or c's
    factory's value) in the instance's dict: no `__setattr__`, which refuses."""
    env: Dict[str, Any] = {"__MISSING": MISSING}
    params, lines = ["self"], ["    __dict = self.__dict__"]
    for at, f in enumerate(fields(cls)):
        value = f.name
        if f.default_factory is not MISSING:
            env["__factory%d" % at] = f.default_factory
            params.append("%s=__MISSING" % f.name)
            value = "__factory%d() if %s is __MISSING else %s" % (at, f.name, f.name)
        elif f.default is not MISSING:
            env["__default%d" % at] = f.default
            params.append("%s=__default%d" % (f.name, at))
        else:
            params.append(f.name)
        lines.append("    __dict[%r] = %s" % (f.name, value))
    source = "def __init__(%s):\n%s\n" % (", ".join(params), "\n".join(lines))
    exec(compile(source, "<record %s>" % cls.__qualname__, "exec"), env)
    init: Callable[..., None] = env["__init__"]
    init.__qualname__ = "%s.__init__" % cls.__qualname__
    return init


def fields(record: Any) -> Tuple[Field, ...]:
    """The fields of a record class or instance, in order; TypeError for anything else."""
    try:
        return getattr(record, _FIELDS)  # type: ignore[no-any-return]
    except AttributeError:
        raise TypeError("%r is not a record" % (record,)) from None


def values(record: Any) -> Tuple[Any, ...]:
    """The record's field values, in order (not copied)."""
    return tuple(getattr(record, f.name) for f in fields(record))


def replace(record: T, **changes: Any) -> T:
    """A copy of `record` with `changes` to its fields."""
    for f in fields(record):
        changes.setdefault(f.name, getattr(record, f.name))
    return type(record)(**changes)


def _repr(self: Any) -> str:
    shown = ", ".join("%s=%r" % (f.name, getattr(self, f.name)) for f in fields(self))
    return "%s(%s)" % (type(self).__qualname__, shown)


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return values(self) == values(other)


def _hash(self: Any) -> int:
    return hash(values(self))


def _setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError("cannot assign to field %r of %s" % (name, type(self).__name__))


def _delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError("cannot delete field %r of %s" % (name, type(self).__name__))


_METHODS: Dict[str, Any] = {
    "__repr__": _repr,
    "__eq__": _eq,
    "__hash__": _hash,
    "__setattr__": _setattr,
    "__delattr__": _delattr,
}
"""What every record gets, unless its class defines its own."""
