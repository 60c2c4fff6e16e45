"""Serving a registered prompt: how long a command takes before and around its one call.

`prompt-descent run NAME --input ...` used to start a throwaway Prefect server and a flow
run for one input (5.5-6.5 s in issue 16), and `expand-qa` did the same before saying that
a prompt is not registered (9 s). Now `run` is not a flow and expand-qa checks the names
first. This times, on the scripted demo model (so the model's own time is ~0):

- `run NAME --input JSON`, a fresh CLI process per input;
- `expand-qa` with an unregistered prompt name (exit 2), a fresh CLI process;
- `expand-qa` of one text, a fresh CLI process: it runs a flow, so it still starts the
  throwaway server; this is what each of the two above paid before;
- `prompt_descent.run_prompt` in one warm process, one new input per call.

    python bench/serving.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, header, machine, markdown_table, now, scratch, write_section

from prompt_descent.core.config import ModelSettings, Prompt
from prompt_descent.core.configfile import load_config
from prompt_descent.features.registry import register_prompt
from prompt_descent.storage.store import Store

CLI = str(Path(sys.executable).parent / "prompt-descent")
DEMO = {
    "PROMPT_DESCENT_FAKE_SCRIPT": "prompt_descent.testing.demo:demo_script",
    "PROMPT_DESCENT_MODEL": "fake/demo",
}
ANSWER = Prompt(
    system="Answer yes or no.",
    template="Text: {text}\nQuestion: {question}\nAnswer:",
)


def registered_store(directory: Path) -> str:
    store = str(directory / "runs.duckdb")
    model = ModelSettings(model="fake/demo", max_tokens=64)
    register_prompt("contains-answer", ANSWER, model, store)
    for name, path in (("qa-pairs", "qa_pairs.yaml"), ("rephrase-question", "rephrase.yaml")):
        register_prompt(name, load_config(ROOT / "examples" / path).prompt, model, store)
    return store


def timed_command(args: list[str], directory: Path, expect: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [CLI, *args],
        cwd=directory,
        env=os.environ | DEMO,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    assert done.returncode == expect, f"{args}: exit {done.returncode}\n{done.stderr[-2000:]}"
    return seconds


def one_input(number: int) -> str:
    return json.dumps({"text": f"Item {number} is in the box.", "question": f"Is {number}?"})


def measure(repeat: int) -> list[list[str]]:
    directory = scratch("pd-serving-")
    store = registered_store(directory)
    texts = directory / "texts.jsonl"
    rows: list[list[str]] = []

    def row(what: str, seconds: list[float]) -> None:
        rows.append([what, f"{statistics.median(seconds):.2f}", f"{min(seconds):.2f}"])

    row(
        "`run contains-answer --input JSON` (CLI process)",
        [
            timed_command(
                ["run", "contains-answer", "--input", one_input(i), "--store", store], directory, 0
            )
            for i in range(repeat)
        ],
    )
    texts.write_text(json.dumps({"text": "Paris is the capital of France."}) + "\n")
    row(
        "`expand-qa` with an unregistered prompt (CLI process, exit 2)",
        [
            timed_command(
                ["expand-qa", str(texts), "--qa-prompt", "missing", "--store", store], directory, 2
            )
            for _ in range(repeat)
        ],
    )
    expanded = []
    for i in range(repeat):
        texts.write_text(json.dumps({"text": f"Paris is the capital of France ({i})."}) + "\n")
        expanded.append(timed_command(["expand-qa", str(texts), "--store", store], directory, 0))
    row("`expand-qa` of one text (CLI process; starts the throwaway Prefect server)", expanded)

    os.environ.update(DEMO)
    from prompt_descent import run_prompt

    run_prompt("contains-answer", [one_input(-1)], store=store)  # imports, first call
    warm = []
    for i in range(repeat * 4):
        started = time.perf_counter()
        run_prompt("contains-answer", [one_input(1000 + i)], store=store)
        warm.append(time.perf_counter() - started)
    row("`prompt_descent.run_prompt(name, [input])` in a warm process", warm)
    assert Store(store).query("SELECT count(*) AS n FROM runs")[0]["n"] > 0
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    started, machine_line = now(), machine()
    table = markdown_table(["what", "median s", "min s"], measure(args.repeat))
    print(table)
    body = (
        header("Serving a registered prompt (bench/serving.py)", machine_line, started)
        + f"- what: wall time of each command, {args.repeat} times (the in-process call "
        f"{4 * args.repeat} times), on the scripted demo model (`fake/demo`, no model time); "
        "every input is new, so no call is served from the cache\n"
        "- before (issue 16, another machine): `run NAME --input` 5.5-6.5 s and `expand-qa` "
        "of an unregistered name 9 s, both after starting a throwaway Prefect server, as "
        "the expand-qa of one text still does here\n"
        "- most of what is left of a CLI command is importing litellm (`python -c 'import "
        "litellm'`: 2.6 s on this loaded machine, 0.7 s for prefect); the Python API pays "
        "it once per process\n\n" + table + "\n"
    )
    if not args.no_write:
        write_section("serving", body)


if __name__ == "__main__":
    main()
