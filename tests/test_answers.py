"""A prompt that lets the model reason: the metric takes the answer from the end of the output."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from prompt_descent import cli
from prompt_descent.core.config import AnswerSpec, Example, MetricSpec, ModelSettings, Prediction
from prompt_descent.testing.fake import Script, ScriptedModel
from tasks.metric import metric

RegisterModel = Callable[[Script], ScriptedModel]
JUDGE = ModelSettings(model="fake/judge")


def scored(spec: MetricSpec, pairs: list[tuple[str, str]]) -> list[float]:
    examples = [
        Example(id=f"e{i}", inputs={"input": "x"}, target=t) for i, (_, t) in enumerate(pairs)
    ]
    predictions = [Prediction(example_id=f"e{i}", output=o) for i, (o, _) in enumerate(pairs)]
    scores = asyncio.run(metric.fn(spec, "p", examples, predictions, JUDGE, 1))
    return [p.score for p in scores.predictions]


def test_last_label_is_the_label_written_last_whole_words_any_case() -> None:
    spec = MetricSpec(answer=AnswerSpec(take="last_label", labels=["yes", "no"]))
    pairs = [
        ("Yes, it could be... but no. Answer: NO.", "no"),  # the last one counts
        ("At first no; on reflection, yes", "yes"),
        ("Nobody knows; yesterday it was yes", "yes"),  # 'Nobody', 'yesterday' are not labels
        ("I cannot tell.", "no"),  # no label at all scores 0
        ("no", "yes"),
    ]
    assert scored(spec, pairs) == [1, 1, 1, 0, 0]


def test_last_label_prefers_the_longer_label_at_the_same_place() -> None:
    spec = MetricSpec(answer=AnswerSpec(take="last_label", labels=["valid", "invalid"]))
    assert scored(spec, [("It looks valid, but it is invalid", "invalid")]) == [1]
    assert scored(spec, [("It looks invalid, but it is valid", "valid")]) == [1]


def test_last_number_and_regex_group() -> None:
    numbers = MetricSpec(answer=AnswerSpec(take="last_number"))
    assert scored(numbers, [("3 apples and 4 pears: 7 in all", "7"), ("7, no: 1,200", "1200")]) == [
        1,
        1,
    ]
    group = MetricSpec(answer=AnswerSpec(take="regex", pattern=r"Answer: (\w+)"))
    outputs = [("Answer: maybe. Rethinking. Answer: Paris", "paris"), ("Paris", "paris")]
    assert scored(group, outputs) == [1, 0]  # the last match's group; no match scores 0


REASONING = "The player is a soccer player and a touchdown is a football play, so"


def reasoning_script(model: str, messages: list[dict[str, str]]) -> str:
    """The task model reasons and answers last; the gradient and apply roles change nothing."""
    system, user = messages[0]["content"], messages[-1]["content"]
    if system.startswith("You are an expert prompt engineer"):
        return "Keep the prompt."
    if system.startswith("You improve prompts"):
        return json.dumps({"system": "Reason, then answer yes or no.", "template": "{input}"})
    number = int(re.search(r"q(\d+)", user).group(1))
    answer = "no" if number % 3 == 0 else "yes"  # every third answer is wrong
    return f"Is it yes or no? {REASONING} the answer is {answer}."


CONFIG = """\
name: reasoning
model: fake/m
prompt: {{system: "Think it through, then say yes or no.", template: "{{input}}"}}
dataset: {{path: data.jsonl}}
splits: {{train: 6, val: 6, test: 6}}
steps: 1
metric: {metric}
store: runs.duckdb
"""


def run_config(tmp_path: Path, metric: str) -> float:
    rows = [{"input": f"q{i}", "target": "yes"} for i in range(18)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "run.yaml").write_text(CONFIG.format(metric=metric))
    result = CliRunner().invoke(cli.app, ["optimize", str(tmp_path / "run.yaml")])
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(tmp_path / "runs.duckdb"), read_only=True) as con:
        return con.execute("SELECT baseline_val FROM runs").fetchone()[0]


def test_a_yaml_metric_takes_the_answer_from_the_end_and_the_gradient_reads_the_reasoning(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    model = fake_model(reasoning_script)

    val = run_config(
        tmp_path, '{name: exact_match, answer: {take: last_label, labels: ["yes", "no"]}}'
    )

    # q0..q17 are split at random; whichever six are val, the right ones are those not
    # divisible by 3, and the whole output never equals a target, so only extraction scores
    gradient_calls = [m for _, m in model.calls if "expert prompt engineer" in m[0]["content"]]
    assert 0 < val < 1
    assert gradient_calls and REASONING in gradient_calls[0][-1]["content"]


def test_without_an_answer_spec_the_reasoning_output_scores_nothing(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    fake_model(reasoning_script)
    assert run_config(tmp_path, "{name: exact_match}") == 0


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        ("{take: last_label}", "metric.answer.labels"),
        ("{take: last_label, labels: [yes, no]}", 'quote the labels, e.g. labels: ["yes", "no"]'),
        ("{take: regex, pattern: '(unclosed'}", "metric.answer.pattern"),
        ("{take: first_word}", "metric.answer.take"),
    ],
)
def test_an_incomplete_answer_spec_is_one_line_naming_the_field(
    tmp_path: Path, answer: str, field: str
) -> None:
    (tmp_path / "data.jsonl").write_text(
        "".join(json.dumps({"input": f"q{i}", "target": "yes"}) + "\n" for i in range(18))
    )
    (tmp_path / "run.yaml").write_text(
        CONFIG.format(metric=f"{{name: exact_match, answer: {answer}}}")
    )
    result = CliRunner().invoke(cli.app, ["optimize", str(tmp_path / "run.yaml")])
    message = result.output.strip()
    assert result.exit_code == 2 and "\n" not in message, message
    assert "run.yaml" in message and field in message, message
    assert not (tmp_path / "runs.duckdb").exists()


@pytest.mark.parametrize(
    ("answer", "rule"),
    [
        ({"take": "last_label", "labels": ["valid", "invalid"]}, "the last of 'valid', 'invalid'"),
        ({"take": "last_number"}, "the last number written"),
        ({"take": "regex", "pattern": "Answer: (\\w+)"}, "of the regex `Answer: (\\w+)`"),
    ],
)
def test_the_gradient_is_told_where_the_answer_is_read(answer: dict, rule: str) -> None:
    assert rule in MetricSpec(answer=answer).answer.rule
