"""The README describes the project as it is."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def layout_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1].strip("\n").splitlines()


def named_paths() -> set[str]:
    """Each path the layout names, joined with the folder it is indented under."""
    paths, parents = set(), {}
    for line in layout_block():
        match = re.match(r"^( *)(\S.*?)(?: {2,}|$)", line)
        if match is None or line.startswith(" " * 12):  # a description's continuation
            continue
        indent, names = len(match.group(1)), match.group(2)
        parent = next((parents[i] for i in sorted(parents, reverse=True) if i < indent), "")
        paths |= {parent + name.strip() for name in names.split(",")}
        if names.endswith("/"):
            parents = {i: p for i, p in parents.items() if i < indent} | {indent: parent + names}
    return paths


def test_the_layout_names_every_package_and_only_what_exists() -> None:
    named = named_paths()
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"the README's layout names what does not exist: {missing}"
    packages = {
        str(init.parent.relative_to(ROOT)) + "/"
        for init in (ROOT / "prompt_descent").rglob("__init__.py")
    } | {"flows/", "tasks/"}
    assert packages - named == set(), "packages the README's layout does not describe"
