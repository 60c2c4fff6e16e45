"""The built-in metrics, the LLM judge and user metrics, through the metric step."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from prompt_descent.core.config import Example, MetricSpec, ModelSettings, Prediction, SplitScore
from prompt_descent.errors import UserError
from prompt_descent.llm.gateway import Gateway, activate
from prompt_descent.testing.fake import Script, ScriptedModel
from tasks.metric import metric, resolve_metric

JUDGE = ModelSettings(model="fake/judge", max_tokens=16)


@pytest.fixture(autouse=True)
def fresh_gateway() -> Iterator[None]:
    """No judge verdict is served from another test's call cache."""
    activate(Gateway())
    yield
    activate(Gateway())


def scores(
    spec: MetricSpec, pairs: list[tuple[str, str | None]], errors: dict[int, str] | None = None
) -> SplitScore:
    """Score (output, target) pairs; `errors` marks predictions whose call failed."""
    errors = errors or {}
    examples = [
        Example(id=f"e{i}", inputs={"input": f"question {i}"}, target=target)
        for i, (_, target) in enumerate(pairs)
    ]
    predictions = [
        Prediction(example_id=f"e{i}", output=output, error=errors.get(i))
        for i, (output, _) in enumerate(pairs)
    ]
    return asyncio.run(metric.fn(spec, "p1", examples, predictions, JUDGE, 2))


def values(spec: MetricSpec, pairs: list[tuple[str, str | None]]) -> list[float]:
    return [p.score for p in scores(spec, pairs).predictions]


def test_exact_match_ignores_case_punctuation_and_spacing() -> None:
    pairs = [
        ("  The   ANSWER!! ", "the answer"),
        ("Paris.", "paris"),
        ("yes", "Yes"),
        ("the answer is", "the answer"),
        ("answer", "the answer"),
        ("", "x"),
    ]
    assert values(MetricSpec(name="exact_match"), pairs) == [1, 1, 1, 0, 0, 0]


def test_exact_match_is_the_default() -> None:
    assert resolve_metric(MetricSpec()) is resolve_metric(MetricSpec(name="exact_match"))


def test_contains_matches_whole_words_only() -> None:
    pairs = [
        ("The cat sat on the mat.", "cat"),
        ("CAT!", "cat"),
        ("I concatenate strings", "cat"),
        ("cats everywhere", "cat"),
        ("It is New York, of course", "new york"),
        ("anything", ""),
    ]
    assert values(MetricSpec(name="contains"), pairs) == [1, 1, 0, 0, 1, 0]


def test_regex_without_group_compares_the_whole_match() -> None:
    spec = MetricSpec(name="regex", pattern=r"\d+")
    pairs = [("It is 42 today", "42"), ("It is 43", "42"), ("no digits", "42")]
    assert values(spec, pairs) == [1, 0, 0]


def test_regex_with_group_compares_the_group() -> None:
    spec = MetricSpec(name="regex", pattern=r"Answer:\s*(\w+)")
    pairs = [
        ("Reasoning first.\nAnswer: paris.", "Paris"),
        ("Answer: London", "Paris"),
        ("Paris", "Paris"),
    ]
    assert values(spec, pairs) == [1, 0, 0]


def test_regex_without_target_scores_the_match_alone() -> None:
    spec = MetricSpec(name="regex", pattern=r"^\{.*\}$")
    assert values(spec, [('{"a": 1}', None), ("plain text", None)]) == [1, 0]


def test_last_number_handles_prose_commas_negatives_and_decimals() -> None:
    pairs = [
        ("The answer is 7.", "7"),
        ("7", "7"),
        ("First 3, then 7", "7"),
        ("7 then 8", "7"),
        ("It costs 1,234 dollars", "1234"),
        ("The temperature fell to -4", "-4"),
        ("4", "-4"),
        ("Half is 0.5", ".5"),
        ("3.50", "3.5"),
        ("no number at all", "7"),
        ("7", "seven"),
    ]
    assert values(MetricSpec(name="last_number"), pairs) == [1, 1, 1, 0, 1, 1, 0, 1, 1, 0, 0]


def test_json_field_reads_the_object_in_the_output() -> None:
    spec = MetricSpec(name="json_field", field="answer")
    pairs = [
        ('{"answer": "Yes", "why": "..."}', "yes"),
        ('Sure! {"answer": 42} hope that helps', "42"),
        ('{"answer": "no"}', "yes"),
        ('{"other": "yes"}', "yes"),
        ("{not json}", "yes"),
        ('["yes"]', "yes"),
    ]
    assert values(spec, pairs) == [1, 1, 0, 0, 0, 0]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (MetricSpec(name="regex"), "metric.pattern"),
        (MetricSpec(name="regex", pattern="(unclosed"), "metric.pattern"),
        (MetricSpec(name="json_field"), "metric.field"),
        (MetricSpec(name="f1_score"), "metric.name"),
        (MetricSpec(name="no_such_module_xyz:score"), "metric.name"),
    ],
)
def test_bad_metric_spec_is_a_user_error_naming_the_field(spec: MetricSpec, field: str) -> None:
    with pytest.raises(UserError) as raised:
        resolve_metric(spec)
    assert raised.value.field == field
    assert f"field '{field}'" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_unknown_metric_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="unknown metric 'f1_score'.*exact_match.*llm_judge"):
        resolve_metric(MetricSpec(name="f1_score"))


def test_failed_prediction_keeps_score_zero_and_its_error() -> None:
    result = scores(MetricSpec(), [("a", "a"), ("", "b")], errors={1: "RateLimitError: slow"})
    assert [(p.score, p.error) for p in result.predictions] == [
        (1.0, None),
        (0.0, "RateLimitError: slow"),
    ]
    assert result.score == 0.5


# --- user metrics ------------------------------------------------------------------------

USER_METRICS = """
def short(output, example):
    return 1.0 if len(output) <= len(example.target) else 0.0


def generous(output, example):
    return 5


def picky(output, example):
    if output == "boom":
        raise ValueError("cannot score boom")
    return 0.25


NOT_A_FUNCTION = 3
"""


@pytest.fixture
def user_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    module = "user_metrics_for_test"
    (tmp_path / f"{module}.py").write_text(USER_METRICS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return module


def test_user_metric_function_is_called_per_example(user_metrics: str) -> None:
    spec = MetricSpec(name=f"{user_metrics}:short")
    assert values(spec, [("abc", "abcd"), ("abcdef", "abcd")]) == [1, 0]


def test_user_metric_is_clamped_and_its_failure_is_data(user_metrics: str) -> None:
    assert values(MetricSpec(name=f"{user_metrics}:generous"), [("x", "y")]) == [1.0]
    result = scores(MetricSpec(name=f"{user_metrics}:picky"), [("fine", "t"), ("boom", "t")])
    assert [p.score for p in result.predictions] == [0.25, 0.0]
    assert result.predictions[1].error == "metric: cannot score boom"


@pytest.mark.parametrize("function", ["missing", "NOT_A_FUNCTION"])
def test_user_metric_that_is_not_a_function_is_a_user_error(
    user_metrics: str, function: str
) -> None:
    with pytest.raises(UserError) as raised:
        resolve_metric(MetricSpec(name=f"{user_metrics}:{function}"))
    assert raised.value.field == "metric.name"
    assert f"{user_metrics}:{function}" in str(raised.value)


# --- the LLM judge -----------------------------------------------------------------------


def judge_replying(reply: Callable[[str], str]) -> Script:
    """The judge's reply as a function of the graded answer (the user message's last line)."""

    def script(model: str, messages: list[dict[str, str]]) -> str:
        assert messages[0]["content"].startswith("You grade answers")
        return reply(messages[-1]["content"].splitlines()[-1])

    return script


def test_llm_judge_scales_the_grade_to_0_1(
    fake_model: Callable[[Script], ScriptedModel],
) -> None:
    grades = {"great": "8", "perfect": "Score: 10", "over": "15", "bad": "0"}
    model = fake_model(judge_replying(lambda answer: grades[answer]))
    spec = MetricSpec(name="llm_judge", rubric="Says something true.")

    result = scores(spec, [("great", "ref"), ("perfect", None), ("over", None), ("bad", None)])

    assert [p.score for p in result.predictions] == [0.8, 1.0, 1.0, 0.0]
    assert all(p.error is None for p in result.predictions)
    assert resolve_metric(spec) is None
    assert len(model.calls) == 4
    (system, user), *_ = [m for _, m in model.calls if m[-1]["content"].endswith("great")]
    assert "Rubric: Says something true." in system["content"]
    assert "question 0" in user["content"] and "Reference answer: ref" in user["content"]


def test_llm_judge_without_a_number_scores_zero_with_an_error(
    fake_model: Callable[[Script], ScriptedModel],
) -> None:
    fake_model(judge_replying(lambda answer: "8" if answer == "good" else "I cannot say."))

    result = scores(MetricSpec(name="llm_judge"), [("good", None), ("vague", None)])

    assert [(p.score, p.error) for p in result.predictions] == [
        (0.8, None),
        (0.0, "judge gave no score"),
    ]


def test_llm_judge_skips_failed_predictions(
    fake_model: Callable[[Script], ScriptedModel],
) -> None:
    model = fake_model(judge_replying(lambda answer: "9"))

    result = scores(
        MetricSpec(name="llm_judge"), [("fine", None), ("", None)], errors={1: "empty completion"}
    )

    assert [(p.score, p.error) for p in result.predictions] == [
        (0.9, None),
        (0.0, "empty completion"),
    ]
    assert len(model.calls) == 1
