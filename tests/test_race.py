"""Several edits from one gradient at once (`race`): scored together on the batch, the
best validated first; with race 1 (the default) apply is asked for one edit at a time."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import duckdb

from flows.optimize import optimize_prompt
from prompt_descent.core.config import RunConfig

MARKER = "Answer with the last word of the input."


def script(model: str, messages: list[dict[str, str]]) -> str:
    system, user = messages[0]["content"], messages[-1]["content"]
    if system.startswith("You improve prompts"):
        fix = "variant 2 of 2" in user  # only the second variant of a race finds the fix
        return json.dumps({"system": MARKER if fix else "Label the item.", "template": "{input}"})
    if "prompt engineer" in system:
        return "The outputs are not the labels."
    return user.split()[-1] if system == MARKER else "maybe"


def optimized(tmp_path: Path, race: int) -> tuple[object, list[dict], list[str]]:
    tmp_path.mkdir(exist_ok=True)
    data = tmp_path / "data.jsonl"
    rows = [{"input": f"item {i} is {t}", "target": t} for i, t in enumerate(["yes", "no"] * 8)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    store = tmp_path / "runs.duckdb"
    config = RunConfig(
        name="race",
        model="fake/m",
        prompt={"system": "Label it."},
        dataset={"path": str(data)},
        splits={"train": 8, "val": 8, "test": 0},
        steps=1,
        max_proposals=2,
        race=race,
        store=str(store),
    )
    summary = asyncio.run(optimize_prompt(config))
    with duckdb.connect(str(store), read_only=True) as con:
        cursor = con.execute(
            "SELECT proposal, accepted, reason FROM iterations ORDER BY created_at, proposal"
        )
        names = [d[0] for d in cursor.description]
        proposals = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        applies = con.execute("SELECT messages FROM llm_calls WHERE role = 'apply'").fetchall()
    return summary, proposals, [json.loads(m)[-1]["content"] for (m,) in applies]


def test_a_race_validates_the_edit_best_on_the_batch_first(tmp_path: Path, fake_model) -> None:
    fake_model(script)
    summary, proposals, applies = optimized(tmp_path, race=2)
    assert len(applies) == 2
    assert {"variant 1 of 2" in a for a in applies} == {True, False}
    # the second variant scored better on the batch, so it went to val first, and won
    assert [(p["proposal"], p["accepted"]) for p in proposals] == [(2, True)]
    assert summary.accepted == 1 and summary.best_val == 1.0


def test_without_a_race_edits_come_one_at_a_time(tmp_path: Path, fake_model) -> None:
    fake_model(script)
    summary, proposals, applies = optimized(tmp_path, race=1)
    assert all("variant" not in a for a in applies)
    assert [p["proposal"] for p in proposals] == [1, 2]  # neither asked as variant 2 of 2
    assert summary.accepted == 0
