"""A pool of the best prompts (`pool`): a step starts from the member that has started the
fewest steps, so the second best line gets batches too; with pool 1 (the default) every
step starts from the last accepted prompt."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import duckdb

from flows.optimize import optimize_prompt
from prompt_descent.core.config import Prediction, Prompt, RunConfig, SplitScore
from prompt_descent.core.pool import Pool

BASELINE = "Label it."
HALF_RIGHT = "Say yes."  # right on the yes half
DEAD_END = "Say maybe."  # what apply writes from HALF_RIGHT: never right
FIX = "Answer with the last word of the input."  # what apply writes from the baseline, later


def script(model: str, messages: list[dict[str, str]]) -> str:
    system, user = messages[0]["content"], messages[-1]["content"]
    if system.startswith("You improve prompts"):
        current = user.split("Feedback:")[0]
        if HALF_RIGHT in current:
            return json.dumps({"system": DEAD_END, "template": "{input}"})
        tried = HALF_RIGHT in user  # the baseline's second step: a new direction
        return json.dumps({"system": FIX if tried else HALF_RIGHT, "template": "{input}"})
    if "prompt engineer" in system:
        return "The outputs are not the labels."
    if system == FIX:
        return user.split()[-1]
    return "yes" if system == HALF_RIGHT else "maybe"


def optimized(tmp_path: Path, pool: int) -> tuple[object, list[tuple[int, str, bool]]]:
    data = tmp_path / "data.jsonl"
    rows = [{"input": f"item {i} is {t}", "target": t} for i, t in enumerate(["yes", "no"] * 12)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    store = tmp_path / f"pool-{pool}.duckdb"
    config = RunConfig(
        name="pool",
        model="fake/m",
        prompt={"system": BASELINE},
        dataset={"path": str(data)},
        splits={"train": 16, "val": 8, "test": 0},
        steps=4,
        max_proposals=1,
        pool=pool,
        store=str(store),
    )
    summary = asyncio.run(optimize_prompt(config))
    with duckdb.connect(str(store), read_only=True) as con:
        steps = con.execute(
            "SELECT i.step, p.system, i.accepted FROM iterations i "
            "JOIN prompts p ON p.prompt_id = i.current_prompt ORDER BY i.step"
        ).fetchall()
    return summary, steps


def test_a_pool_gives_the_second_best_prompt_a_step_and_it_finds_the_fix(
    tmp_path: Path, fake_model
) -> None:
    fake_model(script)
    summary, steps = optimized(tmp_path, pool=2)
    # step 3: both have started one step, the better-ranked goes (its edit repeats step 2's)
    assert steps == [
        (1, BASELINE, True),
        (2, HALF_RIGHT, False),
        (3, HALF_RIGHT, False),
        (4, BASELINE, True),
    ]
    assert summary.accepted == 2 and summary.best_val == 1.0


def test_without_a_pool_every_step_starts_from_the_last_accepted_prompt(
    tmp_path: Path, fake_model
) -> None:
    fake_model(script)
    summary, steps = optimized(tmp_path, pool=1)
    assert [(step, start) for step, start, _ in steps] == [
        (1, BASELINE),
        (2, HALF_RIGHT),
        (3, HALF_RIGHT),
        (4, HALF_RIGHT),
    ]
    assert summary.accepted == 1 and summary.best_val < 1.0  # HALF_RIGHT is the best


def val(score: float) -> SplitScore:
    right = [Prediction(example_id=str(i), output="", score=1.0) for i in range(int(score * 4))]
    wrong = [Prediction(example_id=f"w{i}", output="", score=0.0) for i in range(4 - len(right))]
    return SplitScore(prompt_id="p", predictions=right + wrong)


def test_the_pool_keeps_the_best_and_the_newer_of_a_tie() -> None:
    pool = Pool(size=2)
    first, second, third = (Prompt(system=s) for s in ("a", "b", "c"))
    pool.add(first, val(0.5))
    pool.add(second, val(0.5))
    pool.add(third, val(0.25))
    assert [m.prompt for m in pool.members] == [second, first]
    assert pool.start().prompt == second  # fewest starts, best ranked
    assert pool.start().prompt == first
