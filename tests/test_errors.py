"""The error tree: the drawing in `edge_agent.errors` is the class hierarchy, and the README's
exit-code list is the codes the CLI returns."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from edge_agent import errors

README = Path(__file__).resolve().parents[1] / "README.md"
_NODE = re.compile(r"^(?P<indent>[ │]*)(?:[├└]── )?(?P<name>[A-Z]\w+)\b")


def _drawn_parents() -> dict[str, str | None]:
    """Each class drawn in the module docstring → the class drawn as its parent."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        match = _NODE.match(line.removeprefix("    "))
        if not match or not (match["name"].endswith("Error") or "──" in line):
            continue
        depth = len(match["indent"]) // 4 + ("──" in line)
        stack = [(d, n) for d, n in stack if d < depth]
        parents[match["name"]] = stack[-1][1] if stack else None
        stack.append((depth, match["name"]))
    return parents


def _classes() -> dict[str, type[Exception]]:
    return {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.EdgeAgentError) and cls.__module__ == errors.__name__
    }


def test_the_drawing_is_the_class_hierarchy() -> None:
    drawn = _drawn_parents()
    actual = {
        name: (None if cls is errors.EdgeAgentError else cls.__mro__[1].__name__)
        for name, cls in _classes().items()
    }
    assert drawn == actual


def test_the_readme_lists_every_exit_code() -> None:
    listed = dict(re.findall(r"(\d+) = `(\w+)`", README.read_text(encoding="utf-8")))
    codes = {
        str(cls.exit_code): name
        for name, cls in _classes().items()
        if cls is errors.EdgeAgentError or cls.__mro__[1] is errors.EdgeAgentError
    }
    assert listed == codes
