"""The README describes the project as it is."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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
        if names.endswith("/") and "," not in names:  # a folder that others sit under
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


def fenced_blocks() -> list[tuple[str, str, str]]:
    """(section heading, language, code) of every fenced block, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks, heading = [], ""
    for part in re.split(r"^(```[a-z]*\n.*?^```)$", text, flags=re.M | re.S):
        if part.startswith("```"):
            language, code = part[3:].split("\n", 1)
            blocks.append((heading, language, code.removesuffix("```")))
        else:
            headings = re.findall(r"^#+ (.+)$", part, flags=re.M)
            heading = headings[-1] if headings else heading
    return blocks


# Blocks no test here runs as written (by a line they hold), and why; every other bash
# and python block runs below.
NOT_RUN = {
    "make demo": "CI runs make test; make demo builds llama.cpp and runs the 1.1 GB model",
    "prefect server start": "a Prefect server, a work pool and a worker in three terminals",
    "prefect worker start": "a long-running worker",
}
SHOWN_TO_RUN = {"bash", "python"}


def test_every_command_block_of_the_readme_runs_as_written(tmp_path: Path) -> None:
    """The bash and python blocks, in README order, in a copy of the project's data and
    examples, on the scripted demo model (the README's commands default to the embedded
    model; the demo model makes the same calls in seconds)."""
    for folder in ("data", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PROMPT_DESCENT_MODEL": "fake/demo",
        "PROMPT_DESCENT_FAKE_SCRIPT": "prompt_descent.testing.demo:demo_script",
    }
    ran = []
    for heading, language, code in fenced_blocks():
        if language not in SHOWN_TO_RUN or any(line in code for line in NOT_RUN):
            continue
        command = ["bash", "-e", "-c", code] if language == "bash" else [sys.executable, "-c", code]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"README block under '{heading}':\n{code}\n{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        ran.append(heading)
    assert len(ran) >= 5, ran
    assert (tmp_path / ".prompt_descent" / "reports" / "first-run" / "report.html").is_file()
    assert (tmp_path / "qa.jsonl").is_file() and (tmp_path / "qa.parquet").is_file()
