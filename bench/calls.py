"""LLM calls and tokens per role: prompt-descent vs the Ape-style loop, same decisions.

Both loops run on the same scripted fake model (prompt_descent.testing.fake.ScriptedModel),
the same data, batch size, proposal limit and seed. The script makes the trajectory
depend only on the prompt's "level" (how many `Rule N` sentences its system prompt
holds), never on how the candidate was asked for, so both loops take the same
accept/reject decision at every step:

- the task model answers example i right iff u(i) < quality(level), with u(i) a fixed
  number in [0, 1) per example and quality rising 0.15 per level: a candidate is
  never worse than the current prompt on any example and strictly better on those
  with u(i) in the new band;
- so a candidate is better on the batch iff the batch holds an example of that band
  (some batches do, some do not), and then it is also better on the whole train set
  (Ape) and not worse on val (prompt-descent): accepted by both;
- the apply model adds `Rule <level+1>` to the current system prompt, with a variant
  tag hashed from its request: identical requests (Ape repeats them) give the same
  candidate, different requests (prompt-descent shows the rejected ones) new ones;
- but when the failing examples of the batch sum to an odd number, the candidate
  overfits instead: it memorizes exactly those examples (the gradient names them)
  and loses 0.3 of quality everywhere else, so it may win the batch but is worse on
  any larger set: rejected by both, by prompt-descent's early stop on val (once its
  chance to reach the current val score is below `early_reject_chance`, or it
  certainly cannot) and by the Ape-style loop after scoring the whole train set.

Predict calls made while validating a candidate are counted as `validate`: in
prompt-descent by a context flag set around tasks.validate's predictions, in the
Ape-style loop by its own counter. prompt-descent's llm_calls rows are cross-checked.

    python bench/calls.py [--train 40 --val 40 --epochs 1 2] [--early-reject-chance 0.003]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import hashlib
import json
import re
import tempfile
from collections import Counter
from pathlib import Path

from _common import Caller, header, machine, markdown_table, now, write_section
from ape_loop import ape_loop
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

import tasks.validate
from flows.optimize import optimize_prompt
from prompt_descent.core.config import DatasetSpec, Prompt, RunConfig, Splits
from prompt_descent.core.datasets import load_examples, split_examples
from prompt_descent.llm.gateway import register_provider
from prompt_descent.storage.store import Store
from prompt_descent.testing.fake import ScriptedModel
from tasks.apply import APPLY_SYSTEM
from tasks.gradient import GRADIENT_SYSTEM
from tasks.metric import exact_match

ROLES = ["predict", "gradient", "apply", "validate"]
BASE = Prompt(system="Answer the question.", template="{input}")
START_QUALITY, STEP_QUALITY, OVERFIT_PENALTY = 0.3, 0.15, 0.3

# --- the scripted model ----------------------------------------------------------------

VALIDATING: contextvars.ContextVar[bool] = contextvars.ContextVar("validating", default=False)
_RULE = re.compile(r"Rule \d+")
_MEMORIZED = re.compile(r"Memorize ((?:q\d+ ?)+)")
_FAILING_INPUT = re.compile(r"^input: q(\d+)$", re.MULTILINE)


def u(number: int) -> float:
    """A fixed number in [0, 1) per example (golden-ratio sequence: evenly spread)."""
    return (number * 0.6180339887) % 1.0


def level(system: str) -> int:
    return len(_RULE.findall(system))


def memorized(system: str) -> set[int]:
    found = _MEMORIZED.search(system)
    return {int(q) for q in re.findall(r"q(\d+)", found.group(1))} if found else set()


def quality(system: str) -> float:
    penalty = OVERFIT_PENALTY if memorized(system) else 0.0
    return min(1.0, START_QUALITY + STEP_QUALITY * level(system)) - penalty


def right(system: str, number: int) -> bool:
    return number in memorized(system) or u(number) < quality(system)


def role_of(messages: list[dict[str, str]]) -> str:
    system = messages[0]["content"]
    if system == GRADIENT_SYSTEM:
        return "gradient"
    if system == APPLY_SYSTEM:
        return "apply"
    return "validate" if VALIDATING.get() else "predict"


def current_prompt(request: str) -> dict[str, str]:
    line = request.split("Current prompt:\n", 1)[1].split("\n", 1)[0]
    return json.loads(line)


class Counting:
    """Calls and tokens per role, as the fake model sees them (tokens = words)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()


counting = Counting()


def script(model: str, messages: list[dict[str, str]]) -> str:
    role = role_of(messages)
    if role == "gradient":
        failing = " ".join(f"q{n}" for n in _FAILING_INPUT.findall(messages[1]["content"]))
        reply = f"Add the next rule as one short sentence. Failing: {failing}."
    elif role == "apply":
        request = "\n".join(m["content"] for m in messages[1:])
        current = current_prompt(messages[1]["content"])
        feedback = messages[1]["content"].split("Feedback:\n", 1)[1].split("\n\nEarlier", 1)[0]
        failing = sorted({int(n) for n in re.findall(r"q(\d+)", feedback)})
        variant = hashlib.sha256(request.encode()).hexdigest()[:6]
        if sum(failing) % 2:
            change = "Memorize " + " ".join(f"q{n}" for n in failing)
        else:
            change = f"Rule {level(current['system']) + 1}"
        system = f"{current['system']} {change} (v{variant})."
        reply = json.dumps({"system": system, "template": current["template"]})
    else:
        number = int(re.search(r"q(\d+)", messages[-1]["content"]).group(1))
        reply = f"a{number}" if right(messages[0]["content"], number) else "wrong"
    counting.calls[role] += 1
    counting.tokens[role] += sum(len(m["content"].split()) for m in messages) + len(reply.split())
    return reply


def install_validation_flag() -> None:
    """Mark the predictions tasks.validate makes, so the script counts them as `validate`."""
    original = tasks.validate.run_race

    async def validating(*args, **kwargs):
        token = VALIDATING.set(True)
        try:
            return await original(*args, **kwargs)
        finally:
            VALIDATING.reset(token)

    tasks.validate.run_race = validating


# --- the runs ----------------------------------------------------------------------------


def write_dataset(directory: Path, size: int) -> Path:
    path = directory / "data.jsonl"
    rows = [{"id": f"e{i}", "input": f"q{i}", "target": f"a{i}"} for i in range(size)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def outcome(decisions: list[tuple[int, int, bool]]) -> dict[int, str]:
    """Per step: 'skip', 'accept@p' or 'reject×n'."""
    steps: dict[int, list[tuple[int, bool]]] = {}
    for step, proposal, accepted in decisions:
        steps.setdefault(step, []).append((proposal, accepted))
    result = {}
    for step, rows in sorted(steps.items()):
        if rows == [(0, False)]:
            result[step] = "skip"
        elif any(a for _, a in rows):
            result[step] = f"accept@{next(p for p, a in rows if a)}"
        else:
            result[step] = f"reject×{len(rows)}"
    return result


async def run_prompt_descent(config: RunConfig, workdir: Path) -> dict:
    counting.calls.clear()
    counting.tokens.clear()
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: workdir / "results"}):
        summary = await optimize_prompt(config, register_best=False)
    store = Store(config.store)
    stored = store.query(
        "SELECT role, count(*) AS n, sum(prompt_tokens + completion_tokens) AS tokens "
        "FROM llm_calls WHERE run_id = ? GROUP BY role",
        [summary.run_id],
    )
    stored_calls = {r["role"]: r["n"] for r in stored}
    assert stored_calls.get("predict", 0) == counting.calls["predict"] + counting.calls["validate"]
    assert stored_calls.get("gradient", 0) == counting.calls["gradient"]
    assert stored_calls.get("apply", 0) == counting.calls["apply"]
    rows = store.query(
        "SELECT step, proposal, accepted FROM iterations WHERE run_id = ? ORDER BY step, proposal",
        [summary.run_id],
    )
    # the fewest val predictions that can show a candidate is worse: one wrong answer more
    # than the current prompt has in all of val
    aborted = store.query(
        "SELECT count(*) AS n, coalesce(avg(val_examples_scored), 0) AS avg_scored, "
        "coalesce(avg(round((1 - val_before) * ?) + 1), 0) AS avg_floor "
        "FROM iterations WHERE run_id = ? AND reason LIKE '%reach val%'",
        [config.splits.val, summary.run_id],
    )[0]
    return {
        "aborted": aborted,
        "calls": dict(counting.calls),
        "tokens": dict(counting.tokens),
        "decisions": outcome([(r["step"], r["proposal"], r["accepted"]) for r in rows]),
        "best": summary.best_val,
        "best_prompt": store.prompt(summary.best_prompt),
    }


async def run_ape(config: RunConfig) -> dict:
    splits = split_examples(load_examples(config.dataset), config.splits, config.seed)
    counting.calls.clear()
    caller = Caller()
    result = await ape_loop(
        config.prompt,
        splits.train,
        exact_match,
        config.models,
        caller,
        batch_size=config.batch_size,
        max_proposals=config.max_proposals,
        seed=config.seed,
        epochs=config.epochs,
        concurrency=config.concurrency,
    )
    assert sum(counting.calls.values()) == caller.total
    return {
        "calls": dict(caller.calls),
        "tokens": dict(caller.tokens),
        "decisions": outcome([(s, p, a) for s, p, a, _ in result.decisions]),
        "best_prompt": result.best,
    }


def config_for(directory: Path, train: int, val: int, epochs: int, seed: int) -> RunConfig:
    return RunConfig(
        name=f"calls-e{epochs}",
        model="fake/m",
        prompt=BASE,
        dataset=DatasetSpec(path=str(write_dataset(directory, train + val)), id="id"),
        metric={"name": "exact_match"},
        batch_size=4,
        max_proposals=5,
        epochs=epochs,
        seed=seed,
        splits=Splits(train=train, val=val, test=0),
        concurrency=4,
        store=str(directory / "runs.duckdb"),
    )


def table_rows(pd: dict, ape: dict) -> list[list[object]]:
    rows = []
    for role in [*ROLES, "total"]:
        if role == "total":
            p, a = sum(pd["calls"].values()), sum(ape["calls"].values())
            pt, at = sum(pd["tokens"].values()), sum(ape["tokens"].values())
        else:
            p, a = pd["calls"].get(role, 0), ape["calls"].get(role, 0)
            pt, at = pd["tokens"].get(role, 0), ape["tokens"].get(role, 0)
        ratio = f"{p / a:.2f}" if a else "-"
        rows.append([role, p, a, ratio, f"{pt:,}", f"{at:,}", f"{pt / at:.2f}" if at else "-"])
    return rows


async def main_async(args: argparse.Namespace) -> str:
    register_provider("fake", ScriptedModel(script))
    install_validation_flag()
    started, machine_line = now(), machine()
    sections = []
    printed = []
    for epochs in args.epochs:
        with tempfile.TemporaryDirectory(prefix="pd-calls-") as tmp:
            config = config_for(Path(tmp), args.train, args.val, epochs, args.seed)
            if args.early_reject_chance is not None:
                config = config.model_copy(update={"early_reject_chance": args.early_reject_chance})
            chance = config.early_reject_chance
            pd = await run_prompt_descent(config, Path(tmp))
            ape = await run_ape(config)
        with tempfile.TemporaryDirectory(prefix="pd-calls-") as tmp:
            # what-if: stop validating only once a candidate certainly cannot win
            config = config_for(Path(tmp), args.train, args.val, epochs, args.seed)
            exact = await run_prompt_descent(
                config.model_copy(update={"early_reject_chance": 0.0}), Path(tmp)
            )
        same = pd["decisions"] == ape["decisions"]
        steps = ", ".join(f"{s}:{d}" for s, d in pd["decisions"].items())
        ape_steps = ", ".join(f"{s}:{d}" for s, d in ape["decisions"].items())
        total_pd, total_ape = sum(pd["calls"].values()), sum(ape["calls"].values())
        target = "met" if total_pd <= total_ape / 2 else "NOT met"
        table = markdown_table(
            [
                "role",
                "prompt-descent calls",
                "Ape-style calls",
                "pd / Ape",
                "pd tokens",
                "Ape tokens",
                "pd / Ape tokens",
            ],
            table_rows(pd, ape),
        )
        text = (
            f"### {epochs} epoch(s): train {args.train}, val {args.val}, batch 4, "
            f"up to 5 proposals, seed {args.seed}\n\n{table}\n\n"
            f"- decisions per step (prompt-descent): {steps}\n"
            f"- decisions per step (Ape-style): {ape_steps}\n"
            f"- same decisions: {'yes' if same else 'NO'}; final level: prompt-descent "
            f"{level(pd['best_prompt'].system)}, Ape-style {level(ape['best_prompt'].system)}\n"
            f"- target (prompt-descent ≤ ½ the Ape-style calls): {target} "
            f"({total_pd} vs {total_ape}, ratio {total_pd / total_ape:.2f})\n"
        )
        text += (
            f"- prompt-descent's val early stop (early_reject_chance "
            f"{chance}): {pd['aborted']['n']} candidates stopped after "
            f"{pd['aborted']['avg_scored']:.1f} of {args.val} val examples on average; the "
            f"fewest that can show for certain that a candidate is worse (one wrong answer more "
            f"than the current prompt has in all of val) average {pd['aborted']['avg_floor']:.1f} "
            f"for them (the Ape-style loop scores all {args.train} train examples for each)\n"
        )
        total_exact = sum(exact["calls"].values())
        text += (
            f"- what-if, prompt-descent with early_reject_chance 0 (stop only once a candidate "
            f"certainly cannot win): {total_exact} calls, ratio {total_exact / total_ape:.2f} "
            f"to the Ape-style loop, {exact['aborted']['avg_scored']:.1f} val examples per "
            f"stopped candidate; same decisions: "
            f"{'yes' if exact['decisions'] == ape['decisions'] else 'NO'}\n"
        )
        sections.append(text)
        printed.append(text)
        print(text, flush=True)
    body = (
        header(
            "LLM calls per role: prompt-descent vs Ape-style (bench/calls.py)",
            machine_line,
            started,
        )
        + "- model: the deterministic scripted fake (`fake/m`, tokens = words); the trajectory "
        "depends only on the prompt's level, so both loops take the same decisions (checked "
        "below); `validate` = predictions made to check a candidate (batch + val for "
        "prompt-descent, batch + whole train set for Ape-style); prompt-descent's counts are "
        "cross-checked against its llm_calls rows\n\n" + "\n".join(sections)
    )
    if not args.no_write:
        write_section("calls", body)
    return "\n".join(printed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--val", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--early-reject-chance", type=float, help="prompt-descent's, instead of the default"
    )
    parser.add_argument("--no-write", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
