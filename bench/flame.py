"""A flame graph (SVG) from collapsed stacks: `frame;frame;... count` lines, as
bench/cpuprof.py and `py-spy record --format raw` write them.

    python3 -m bench.flame STACKS.txt OUT.svg [--title TEXT] [--min 0.002]

Each box is a function, its width its share of the samples, its callees above it; hover for
the function, its samples and share. Boxes narrower than `--min` of the whole are left out.
Plain SVG, no script, so it shows anywhere an image does.
"""

from __future__ import annotations

import argparse
import html
import zlib
from pathlib import Path

WIDTH, ROW, FONT = 1200, 16, 11


class Node:
    """A function at one place in the call tree: its samples, and its callees by name."""

    __slots__ = ("children", "count")

    def __init__(self) -> None:
        self.count = 0
        self.children: dict[str, Node] = {}


def load(path: Path) -> Node:
    root = Node()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        node = root
        node.count += int(count)
        for frame in stack.split(";"):
            node = node.children.setdefault(_short(frame), Node())
            node.count += int(count)
    return root


def _short(frame: str) -> str:
    """`func (path/to/anet/core/engine.py:12)` -> `func (anet/core/engine.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", "/wt/cpu/", "/main/"):
        where = where.split(marker, 1)[-1]
    return f"{name} ({where})" if where else name


def render(root: Node, title: str, least: float) -> str:
    boxes: list[str] = []
    depth = _depth(root)
    height = (depth + 2) * ROW

    def draw(node: Node, name: str, x: float, level: int) -> None:
        width = WIDTH * node.count / root.count
        if width < WIDTH * least:
            return
        y = height - (level + 1) * ROW
        share = 100 * node.count / root.count
        hue = zlib.crc32(name.split(" (")[-1].encode()) % 60  # one colour per file
        label = html.escape(name if width > 7 * len(name) else name[: int(width / 7)])
        tip = html.escape(f"{name}: {node.count} samples, {share:.1f}%")
        boxes.append(
            f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{width:.1f}" '
            f'height="{ROW - 1}" fill="hsl({hue},70%,60%)"/>'
            f'<text x="{x + 2:.1f}" y="{y + ROW - 4}">{label}</text></g>'
        )
        for child_name, child in sorted(node.children.items()):
            draw(child, child_name, x, level + 1)
            x += WIDTH * child.count / root.count

    draw(root, f"all ({root.count} samples)", 0.0, 0)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height + ROW}" '
        f'font-family="monospace" font-size="{FONT}">'
        f'<text x="4" y="{ROW - 3}">{html.escape(title)}</text>' + "".join(boxes) + "</svg>\n"
    )


def _depth(node: Node) -> int:
    return 1 + max((_depth(child) for child in node.children.values()), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stacks", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--title", default="")
    parser.add_argument("--min", type=float, default=0.002, help="least share of a box shown")
    args = parser.parse_args()
    args.out.write_text(render(load(args.stacks), args.title, args.min))


if __name__ == "__main__":
    main()
