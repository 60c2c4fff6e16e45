"""Demonstrations: a prompt's worked examples, shown as earlier user/assistant turns.

The optimizer proposes demonstration sets from train and validates them like an
instruction edit; a set is stored with its prompt, registered, exported, imported and
served by `run`. A demonstration never comes from val or test.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from flows.optimize import optimize_prompt, prepare_run
from prompt_descent import api
from prompt_descent.core.config import Demo, DemoSettings, Example, Prompt, RunConfig
from prompt_descent.core.datasets import load_examples, split_examples
from prompt_descent.errors import UserError
from prompt_descent.storage.store import Store
from tasks.demos import draw_demos

Messages = list[dict[str, str]]


def shows_demos(messages: Messages) -> bool:
    return any(m["role"] == "assistant" for m in messages[1:-1])


def optimizer_reply(messages: Messages) -> str | None:
    """The gradient and apply roles' replies, an edit that changes nothing the task model
    reads; None for a task call."""
    system = messages[0]["content"]
    if system.startswith("You are an expert prompt engineer"):
        return "Show the model worked examples."
    if system.startswith("You improve prompts"):
        return json.dumps({"system": "Answer the question briefly.", "template": "{input}"})
    return None


def demos_help(model: str, messages: Messages) -> str:
    """The task model answers `a<i>` to `q<i>` only when the prompt shows demonstrations."""
    if (reply := optimizer_reply(messages)) is not None:
        return reply
    question = messages[-1]["content"]
    return question.replace("q", "a") if shows_demos(messages) else "wrong"


def write_dataset(directory: Path) -> Path:
    path = directory / "data.jsonl"
    rows = [{"id": f"e{i}", "input": f"q{i}", "target": f"a{i}"} for i in range(24)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def make_config(tmp_path: Path, **overrides: Any) -> RunConfig:
    settings: dict[str, Any] = {
        "name": "qa",
        "model": "fake/m",
        "prompt": {"system": "Answer the question.", "template": "{input}"},
        "dataset": {"path": str(write_dataset(tmp_path)), "id": "id"},
        "splits": {"train": 8, "val": 8, "test": 8},
        "store": str(tmp_path / "runs.duckdb"),
        "batch_size": 4,
        "steps": 1,
        "max_proposals": 1,
        "demos": {"count": 2, "source": "labeled"},
    }
    return RunConfig(**(settings | overrides))


def test_a_demonstration_set_that_helps_is_accepted_and_comes_from_train_outside_the_batch(
    tmp_path: Path, fake_model
) -> None:
    model = fake_model(demos_help)
    config = make_config(tmp_path)
    splits = split_examples(load_examples(config.dataset), config.splits, config.seed)

    summary = asyncio.run(optimize_prompt(config))

    assert summary.accepted == 1
    assert (summary.baseline_val, summary.best_val, summary.best_test) == (0.0, 1.0, 1.0)
    best = Store(config.store).prompt(summary.best_prompt)
    assert best.system == "Answer the question." and len(best.demos) == 2
    (iteration,) = Store(config.store).query("SELECT * FROM iterations")
    assert iteration["accepted"] and iteration["candidate_prompt"] == best.id
    shown = {demo.inputs["input"] for demo in best.demos}
    train = {e.inputs["input"] for e in splits.train}
    batch = {e.inputs["input"] for e in splits.train if e.id in iteration["batch_ids"]}
    assert shown <= train - batch
    assert all(demo.output == demo.inputs["input"].replace("q", "a") for demo in best.demos)
    assert not any(m[1][0]["content"].startswith("You improve prompts") for m in model.calls), (
        "the instruction edit was asked for although the demonstrations were accepted"
    )


def test_demonstrations_survive_export_import_and_run(tmp_path: Path, fake_model) -> None:
    model = fake_model(demos_help)
    config = make_config(tmp_path)
    summary = asyncio.run(optimize_prompt(config))
    exported = api.export_prompt(api.load_prompt("qa", store=config.store), tmp_path / "qa.yaml")

    other_store = tmp_path / "other.duckdb"
    imported = api.import_prompt(exported, "qa-copy", other_store)
    model.calls.clear()
    (output,) = api.run_prompt("qa-copy", ["q99"], store=other_store)

    assert imported.prompt.id == summary.best_prompt and len(imported.prompt.demos) == 2
    assert output.output == "a99"
    ((_, messages),) = model.calls
    roles = ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m["role"] for m in messages] == roles


def reasons_then_answers(model: str, messages: Messages) -> str:
    """The task model reasons, then answers: right on every third question, and on every
    question once the prompt shows demonstrations that reason too."""
    if (reply := optimizer_reply(messages)) is not None:
        return reply
    question = messages[-1]["content"]
    demos = [m["content"] for m in messages[1:-1] if m["role"] == "assistant"]
    right = int(question[1:]) % 3 == 0 or (demos and all("Answer:" in d for d in demos))
    return f"{question} asks for its a. Answer: {question.replace('q', 'a') if right else 'b'}"


def test_where_the_answer_is_read_from_reasoning_demonstrations_are_the_models_own_outputs(
    tmp_path: Path, fake_model
) -> None:
    fake_model(reasons_then_answers)
    config = make_config(
        tmp_path,
        demos={"count": 2, "source": "bootstrapped"},
        metric={"name": "exact_match", "answer": {"take": "regex", "pattern": "Answer: (\\w+)"}},
    )

    summary = asyncio.run(optimize_prompt(config))

    assert summary.accepted == 1 and summary.best_val == 1.0
    store = Store(config.store)
    best = store.prompt(summary.best_prompt)
    assert 1 <= len(best.demos) <= 2  # as many as the model got right, up to the count
    for demo in best.demos:  # reasoning and answer as the model wrote them, not a bare target
        question = demo.inputs["input"]
        assert demo.output == f"{question} asks for its a. Answer: {question.replace('q', 'a')}"
    (iteration,) = store.query("SELECT batch_ids FROM iterations")
    (bootstrap,) = store.query(
        "SELECT count(*) AS predicted FROM predictions p JOIN evaluations e USING (prompt_id) "
        "WHERE e.label = 'step 1 bootstrap' AND p.split = 'train'"
    )
    shown = {d.inputs["input"] for d in best.demos}
    assert not shown & {f"q{i[1:]}" for i in iteration["batch_ids"]}
    assert bootstrap["predicted"] > 0


def test_a_demonstration_that_is_a_val_example_is_refused_before_any_call(
    tmp_path: Path, fake_model
) -> None:
    model = fake_model(demos_help)
    config = make_config(tmp_path)
    splits = split_examples(load_examples(config.dataset), config.splits, config.seed)
    val_example = splits.val[0]
    prompt = Prompt(
        system="Answer the question.",
        demos=[{"inputs": val_example.inputs, "output": val_example.target}],
    )

    with pytest.raises(UserError, match="never drawn from val or test") as refused:
        prepare_run(config.model_copy(update={"prompt": prompt}))

    assert refused.value.field == "prompt.demos.0"
    assert f"example {val_example.id} of the val split" in str(refused.value)
    assert model.calls == []


def test_bootstrapped_demonstrations_prefer_the_models_right_answers_and_alternate_labels() -> None:
    pool = [
        Example(id=f"e{i}", inputs={"input": f"q{i}"}, target="yes" if i < 6 else "no")
        for i in range(12)
    ]
    right = {"e1": "yes, because one", "e7": "no, because seven"}
    settings = DemoSettings(count=4, source="bootstrapped")

    demos = draw_demos(pool, right, settings, seed=3)

    assert [d.output.split(",")[0] for d in demos] in (["yes", "no"] * 2, ["no", "yes"] * 2)
    assert {"yes, because one", "no, because seven"} <= {d.output for d in demos}
    labeled = draw_demos(pool, right, settings.model_copy(update={"source": "labeled"}), seed=3)
    assert all(d.output in ("yes", "no") for d in labeled)


def test_a_prompt_without_demonstrations_keeps_its_content_address() -> None:
    plain = Prompt(system="s", template="{input}")
    shown = plain.with_demos([Demo(inputs={"input": "q"}, output="a")])
    assert plain.id == hashlib.sha256(b"s\x00{input}").hexdigest()[:16]
    assert shown.id != plain.id
    assert shown.render({"input": "x"})[1:] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "x"},
    ]


def test_evaluating_a_prompt_on_an_example_it_demonstrates_is_refused_before_any_call(
    tmp_path: Path, fake_model
) -> None:
    model = fake_model(demos_help)
    config = make_config(tmp_path)
    shown = load_examples(config.dataset)[3]
    prompt = Prompt(
        system="Answer the question.", demos=[{"inputs": shown.inputs, "output": shown.target}]
    )

    with pytest.raises(UserError, match="never drawn from val or test") as refused:
        api.evaluate(prompt, config.dataset, model="fake/m", store=tmp_path / "eval.duckdb")

    assert refused.value.field == "prompt.demos.0"
    assert f"example {shown.id} of the eval split" in str(refused.value)
    assert model.calls == [] and not (tmp_path / "eval.duckdb").exists()
