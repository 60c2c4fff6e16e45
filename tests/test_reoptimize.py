"""reoptimize (champion vs challenger, promotions) and the run report, on the demo model."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from flows.deployed import optimize_from_config
from flows.reoptimize import reoptimize
from prompt_descent import api
from prompt_descent.cli import app
from prompt_descent.core.config import Prompt, RunConfig
from prompt_descent.core.results import Promotion
from prompt_descent.errors import UserError
from prompt_descent.features.registry import current_champion, register_prompt
from prompt_descent.presentation.report import RunHistory, svg_data_uri
from prompt_descent.storage.store import Store
from prompt_descent.testing.demo import STRICT, YES_NO, demo_script
from prompt_descent.testing.fake import Script, ScriptedModel

DATA = Path(__file__).resolve().parents[1] / "data" / "contains_answer.jsonl"
VAGUE = Prompt(
    system="Read the text and the question, then respond.",
    template="Text: {text}\nQuestion: {question}\nAnswer:",
)
BEST = Prompt(system=f"{VAGUE.system} {YES_NO} {STRICT}", template=VAGUE.template)


@pytest.fixture
def demo(fake_model: Callable[[Script], ScriptedModel]) -> ScriptedModel:
    return fake_model(demo_script)


def write_config(tmp_path: Path, **overrides: Any) -> Path:
    config = {
        "name": "contains-answer",
        "model": "fake/demo",
        "prompt": VAGUE.model_dump(),
        "dataset": {
            "path": str(DATA),
            "fields": {"text": "text", "question": "question"},
            "target": "answer",
        },
        "batch_size": 4,
        "max_proposals": 1,
        "steps": 1,
        "splits": {"train": 4, "val": 12, "test": 12},
        "store": "runs.duckdb",
    } | overrides
    path = tmp_path / "nightly.yaml"
    path.write_text(json.dumps(config))
    return path


def register(store: Store, config_path: Path, prompt: Prompt) -> int:
    config = RunConfig(**json.loads(config_path.read_text()))
    return register_prompt("contains-answer", prompt, config.models.task, store).version


def champions(store: Store) -> list[dict[str, Any]]:
    return store.query("SELECT version, prompt_id FROM registry WHERE champion")


def test_challenger_that_wins_by_the_margin_is_promoted(tmp_path: Path, demo: Any) -> None:
    config_path = write_config(tmp_path)
    store = Store(tmp_path / "runs.duckdb")
    register(store, config_path, VAGUE)

    promotion = asyncio.run(reoptimize(str(config_path), margin=0.1))

    assert promotion.promoted and promotion.promoted_version == 2
    assert promotion.champion_version == 1 and promotion.champion_prompt == VAGUE.id
    assert promotion.champion_score == 0.0 < 0.1 < promotion.challenger_score
    assert promotion.reason.startswith("challenger beats champion v1: test ")
    (row,) = store.query("SELECT * FROM promotions")
    assert Promotion(**{k: v for k, v in row.items() if k != "created_at"}) == promotion
    new = current_champion("contains-answer", store)
    assert new is not None and new.version == 2 and new.prompt.id == promotion.challenger_prompt
    assert YES_NO in new.prompt.system and new.test_score == promotion.challenger_score
    # the optimizer run itself registered nothing: only the promotion did
    assert [r["version"] for r in store.query("SELECT version FROM registry")] == [1, 2]


def test_challenger_within_the_margin_is_refused_and_the_reason_kept(
    tmp_path: Path, demo: Any
) -> None:
    config_path = write_config(tmp_path)
    store = Store(tmp_path / "runs.duckdb")
    register(store, config_path, VAGUE)

    promotion = asyncio.run(reoptimize(str(config_path), margin=0.99))

    assert not promotion.promoted and promotion.promoted_version is None
    assert promotion.challenger_prompt != promotion.champion_prompt
    assert re.fullmatch(
        r"challenger does not beat champion v1: test 0\.\d+ vs 0\.000 \(\+0\.\d+\) "
        r"is not > margin 0\.99; kept",
        promotion.reason,
    )
    assert champions(store) == [{"version": 1, "prompt_id": VAGUE.id}]
    (row,) = store.query("SELECT promoted, reason, margin FROM promotions")
    assert row == {"promoted": False, "reason": promotion.reason, "margin": 0.99}


def test_champion_that_cannot_be_improved_is_kept(tmp_path: Path, demo: Any) -> None:
    config_path = write_config(tmp_path, max_proposals=2, steps=2)
    store = Store(tmp_path / "runs.duckdb")
    register(store, config_path, BEST)

    promotion = asyncio.run(reoptimize(str(config_path)))

    assert not promotion.promoted
    assert promotion.challenger_prompt == promotion.champion_prompt == BEST.id
    assert promotion.champion_score == promotion.challenger_score
    assert promotion.reason == "no proposal beat champion v1 during optimization; kept"
    assert champions(store) == [{"version": 1, "prompt_id": BEST.id}]


def test_without_a_champion_the_config_prompt_is_the_one_to_beat(tmp_path: Path, demo: Any) -> None:
    config_path = write_config(tmp_path)
    store = Store(tmp_path / "runs.duckdb")

    promotion = asyncio.run(reoptimize(str(config_path)))

    assert promotion.promoted and promotion.champion_version is None
    assert promotion.reason.startswith("challenger beats the config's prompt: ")
    assert champions(store) == [{"version": 1, "prompt_id": promotion.challenger_prompt}]


def test_reoptimize_needs_a_test_split(tmp_path: Path, demo: Any) -> None:
    config_path = write_config(tmp_path, splits={"train": 4, "val": 12, "test": 0})
    with pytest.raises(Exception, match=r"nightly.yaml field 'splits.test': reoptimize compares"):
        asyncio.run(reoptimize(str(config_path)))


# --- the report ------------------------------------------------------------------------------


def test_report_shows_scores_prompt_history_and_iterations(tmp_path: Path, demo: Any) -> None:
    config_path = write_config(
        tmp_path, steps=3, max_proposals=2, splits={"train": 12, "val": 24, "test": 24}
    )
    summary = asyncio.run(optimize_from_config(str(config_path)))
    store = Store(tmp_path / "runs.duckdb")
    assert summary.accepted == 2

    # the run wrote its report next to the store already
    made = tmp_path / "reports" / summary.run_id
    assert (made / "report.html").is_file() and (made / "scores.svg").is_file()

    result = CliRunner().invoke(
        app, ["report", summary.run_id, "--out", str(tmp_path / "out"), "--store", str(store.path)]
    )
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "report.html").read_text()
    chart = (tmp_path / "out" / "scores.svg").read_text()
    shapes = Counter(
        element.tag.rsplit("}", 1)[-1] for element in ElementTree.fromstring(chart).iter()
    )
    history = RunHistory.load(store, summary.run_id)
    scored = [it for it in history.proposals if it["batch_after"] is not None]
    # a circle per batch score of the current prompt, a triangle per scored candidate, a star
    # per accepted one on the val line; each kind once more in the legends
    assert shapes["circle"] == len(history.iterations) + 1
    assert shapes["polygon"] == len(scored) + len(history.accepted) + 3
    assert shapes["path"] == 1
    assert f'src="{svg_data_uri(chart)}"' in page and "<script" not in page
    assert [p["accepted"] for p in history.proposals].count(True) == 2
    # each accepted prompt, its reason, and the diff line that added its instruction
    for instruction in (YES_NO, STRICT):
        assert re.search(rf'<span class="add">\+[^<]*{re.escape(instruction)}', page)
    for row in history.accepted:
        assert row["reason"].replace(">", "&gt;") in page
    assert page.count("<tr") == 1 + len(history.iterations) + 4  # + the summary table
    assert f"{summary.best_val:.3f}" in page
    # the val line steps up at each accepted step
    assert history.val_by_step()[0] == (0, summary.baseline_val)
    assert history.val_by_step()[-1] == (3, summary.best_val)

    # a directory that cannot be made is one line naming it, not a traceback
    blocked = tmp_path / "out" / "report.html" / "again"
    result = CliRunner().invoke(
        app, ["report", summary.run_id, "--out", str(blocked), "--store", str(store.path)]
    )
    assert result.exit_code == 2
    assert f"cannot write the report to {blocked}" in result.output
    assert "Traceback" not in result.output


def test_report_of_an_unknown_run_is_a_one_line_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.duckdb")
    result = CliRunner().invoke(app, ["report", "nope", "--store", str(store.path)])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    with pytest.raises(UserError):
        api.write_report("nope", store.path, tmp_path)
