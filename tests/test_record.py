"""dispatcher/record.py: frozen records, the wire messages' classes without dataclasses.

What the protocol and the master rely on from a record: its fields in order (the wire order),
their defaults and metadata, positional and keyword construction, immutability, equality by
class and fields, hashing, a readable repr; and the class's own methods kept.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from dispatcher.protocol import Hello, Run, Setup
from dispatcher.record import FrozenInstanceError, field, fields, frozen, replace, values


@frozen
class Point:
    KIND: ClassVar[str] = "point"
    x: int
    y: int = 2
    tags: dict[str, str] = field(default_factory=dict)
    note: str = field(default="", metadata={"bound": 5})

    def total(self) -> int:
        return self.x + self.y


def test_fields_are_the_annotations_in_order_without_classvars():
    assert [f.name for f in fields(Point)] == ["x", "y", "tags", "note"]
    assert [f.type for f in fields(Point)] == ["int", "int", "dict[str, str]", "str"]
    assert fields(Point)[3].metadata == {"bound": 5}
    assert Point.KIND == "point" and fields(Point(1)) == fields(Point)


def test_construction_by_position_keyword_and_defaults():
    assert values(Point(1)) == (1, 2, {}, "")
    assert values(Point(1, 3, {"a": "b"}, "n")) == (1, 3, {"a": "b"}, "n")
    assert values(Point(y=4, x=0)) == (0, 4, {}, "")
    assert Point(1).tags is not Point(1).tags  # a factory's value per instance
    assert Point(1, 5).total() == 6  # the class's own methods stay
    with pytest.raises(TypeError):
        Point()
    with pytest.raises(TypeError):
        Point(1, 2, {}, "", "too many")
    with pytest.raises(TypeError):
        Point(1, z=3)


def test_a_record_is_frozen():
    p = Point(1)
    with pytest.raises(FrozenInstanceError):
        p.x = 5  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del p.x
    assert isinstance(FrozenInstanceError(), AttributeError)


def test_equality_is_by_class_and_fields_and_hash_follows():
    @frozen
    class Other:
        x: int
        y: int = 2

    assert Point(1) == Point(1, 2) and Point(1) != Point(2)
    assert Point(1) != Other(1) and Other(1) != Point(1)
    assert hash(Other(1, 2)) == hash(Other(1, 2)) and len({Other(1), Other(1), Other(3)}) == 2
    with pytest.raises(TypeError):  # a dict field: unhashable, as a dataclass's would be
        hash(Point(1))


def test_repr_names_the_class_and_its_fields():
    assert repr(Point(1, note="x")) == "Point(x=1, y=2, tags={}, note='x')"


def test_replace_changes_only_what_it_is_given():
    p = Point(1, 3, {"k": "v"}, "n")
    assert values(replace(p, y=9)) == (1, 9, {"k": "v"}, "n")
    assert p.y == 3
    with pytest.raises(TypeError):
        replace(p, nosuch=1)


def test_a_base_records_fields_come_first_and_a_redefinition_replaces_one():
    @frozen
    class Base:
        a: int
        b: int = 1

    @frozen
    class Child(Base):
        c: int = 2
        b: int = 5

    assert [f.name for f in fields(Child)] == ["a", "c", "b"]
    assert values(Child(0)) == (0, 2, 5) and values(Base(0)) == (0, 1)


def test_class_mistakes_are_refused_when_the_class_is_made():
    with pytest.raises(TypeError, match="'y' without a default follows"):

        @frozen
        class Bad:
            x: int = 0
            y: int

    with pytest.raises(ValueError, match="mutable default"):

        @frozen
        class Shared:
            items: list[Any] = []  # noqa: RUF012

    with pytest.raises(ValueError, match="both"):
        field(default=1, default_factory=int)
    with pytest.raises(TypeError, match="not a record"):
        fields(object())


def test_messages_keep_their_wire_order_and_defaults():
    assert [f.name for f in fields(Hello)] == [
        "version", "hostname", "cores", "python", "load", "pid", "workdir"
    ]  # fmt: skip
    assert values(Run(1, 2, b"true")) == (1, 2, b"true", {}, False)
    setup = Setup(4, "h", "/", 2.0, 15.0, fold=0.05)
    assert (setup.nice, setup.max_load, setup.fold) == (0, -1.0, 0.05)
