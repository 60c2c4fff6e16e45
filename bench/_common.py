"""What the benchmarks share: a counting LLM caller for the reference loops, scoring,
the machine description, and writing one's own section of BENCHMARKS.md.

Importing it sets up the environment a benchmark runs in (see below). The reference
loops (ape_loop.py, tiny_textgrad_loop.py) call litellm directly through
`Caller`: no cache, no Prefect, no DuckDB. `Caller` counts calls and tokens per role
and stops a loop with `OutOfBudget` once its call budget is spent.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

# Before litellm and Prefect are imported (every bench script imports this module first):
# a private Prefect home per run (removed at exit, after Prefect's own exit handlers,
# registered later, have stopped its ephemeral server), quiet logs, no remote cost map.
if "PREFECT_HOME" not in os.environ:
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="pd-bench-prefect-")
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import litellm

from prompt_descent.core.concurrency import fan_out
from prompt_descent.core.config import Example, ModelSettings, Prompt

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
RESULTS = ROOT / "bench" / "results"
JSON_MODE = {"type": "json_object"}

Metric = Callable[[str, Example], float]


class OutOfBudget(Exception):
    """The loop's call budget is spent; it stops and keeps its best prompt."""


class Caller:
    """Plain litellm calls, counted per role; every call is paid (no cache)."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget
        self.calls: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()
        self.failed = 0
        # (calls, concurrency) of every fan-out, in order: what an ideal run waits for
        self.fanouts: list[tuple[int, int]] = []

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    async def ask(
        self,
        role: str,
        settings: ModelSettings,
        messages: list[dict[str, str]],
        json_mode: bool = False,
    ) -> str:
        self.fanouts.append((1, 1))
        return await self._ask(role, settings, messages, json_mode)

    async def _ask(
        self,
        role: str,
        settings: ModelSettings,
        messages: list[dict[str, str]],
        json_mode: bool = False,
    ) -> str:
        if self.budget is not None and self.total >= self.budget:
            raise OutOfBudget(f"budget of {self.budget} calls spent")
        self.calls[role] += 1
        extra = {"response_format": JSON_MODE} if json_mode else {}
        try:
            response = await litellm.acompletion(
                model=settings.model,
                messages=messages,
                num_retries=0,
                api_base=settings.api_base,
                **settings.sampling(),
                **extra,
            )
        except Exception:  # a failed call scores 0, as in prompt-descent
            self.failed += 1
            return ""
        usage = getattr(response, "usage", None)
        self.tokens[role] += (getattr(usage, "total_tokens", 0) or 0) if usage else 0
        return response.choices[0].message.content or ""

    async def many(
        self,
        role: str,
        settings: ModelSettings,
        conversations: list[list[dict[str, str]]],
        concurrency: int,
        json_mode: bool = False,
    ) -> list[str]:
        """All conversations, at most `concurrency` in flight, replies in input order."""
        self.fanouts.append((len(conversations), concurrency))
        return await fan_out(
            [partial(self._ask, role, settings, m, json_mode) for m in conversations],
            concurrency,
            stops=(OutOfBudget,),
        )


async def score(
    caller: Caller,
    role: str,
    prompt: Prompt,
    examples: list[Example],
    settings: ModelSettings,
    metric: Metric,
    concurrency: int,
) -> list[tuple[Example, str, float]]:
    """(example, output, score) for every example, predicted with `prompt`."""
    outputs = await caller.many(
        role, settings, [prompt.render(e.inputs) for e in examples], concurrency
    )
    return [
        (e, o.strip(), float(metric(o.strip(), e))) for e, o in zip(examples, outputs, strict=True)
    ]


def scratch(prefix: str) -> Path:
    """A directory for this process's throwaway files, removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


_BBH_FILES = scratch("pd-bench-bbh-")


def bbh_task(data: Path, task: str) -> Path:
    """A BBH-format task file of `data` as JSONL, without repeated inputs (prompt-descent
    refuses duplicates, which could land in two splits), written outside the repository."""
    path = _BBH_FILES / f"{task}.jsonl"
    if not path.exists():
        rows, seen = [], set()
        for row in json.loads((data / f"{task}.json").read_text())["examples"]:
            if row["input"] not in seen:
                seen.add(row["input"])
                rows.append({"input": row["input"], "target": row["target"]})
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"nproc {os.cpu_count()} ({len(os.sched_getaffinity(0))} usable), CPU {cpu}, "
        f"Python {platform.python_version()}, load average at start {load} "
        "(2 cores shared with other engineers: compare ratios within one run)"
    )


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def measured_in_child(script: str, args: list[str], what: str, env: dict | None = None) -> dict:
    """Run `script args` in a fresh Python process (its own peak memory, its own imports) and
    return the JSON object it prints last; its stderr tail is shown if it fails."""
    child = subprocess.run(
        [sys.executable, script, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        print(child.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{what} failed")
    return json.loads(child.stdout.strip().splitlines()[-1])


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def command() -> str:
    return "python " + " ".join([str(Path(sys.argv[0]).resolve().relative_to(ROOT))] + sys.argv[1:])


def header(title: str, machine_line: str, started: str, commands: str | None = None) -> str:
    return (
        f"## {title}\n\n"
        f"- command: {commands or f'`{command()}`'}\n"
        f"- machine: {machine_line}\n"
        f"- date: {started}, commit {git_commit()} (+ uncommitted work)\n"
    )


def save_json(path: Path, data: object) -> None:
    """Write a results file whole or not at all (a run interrupted mid-write keeps the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def write_section(name: str, body: str) -> None:
    """Replace the `<!-- name:start -->` … `<!-- name:end -->` block (or append it)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS.read_text(encoding="utf-8") if BENCHMARKS.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text, encoding="utf-8")


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
