"""Step 2, the loss: score each output against its target, 0 (wrong) to 1 (right).

Built-in metrics: exact_match (normalised), contains, regex, last_number,
json_field, llm_judge (a rubric), and any user function given as
'module:function' taking (output, example) and returning a number in 0..1.
"""

from __future__ import annotations

import importlib
import re
import string
from collections.abc import Callable

from prompt_descent.core import answers
from prompt_descent.core.config import (
    AnswerSpec,
    Example,
    MetricSpec,
    ModelSettings,
    Prediction,
    SplitScore,
)
from prompt_descent.errors import UserError
from prompt_descent.llm.gateway import active_gateway
from prompt_descent.llm.structured import extract_json
from tasks.options import step

Metric = Callable[[str, Example], float]

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalise(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def exact_match(output: str, example: Example) -> float:
    return float(normalise(output) == normalise(example.target or ""))


def contains(output: str, example: Example) -> float:
    target = normalise(example.target or "")
    return float(bool(target) and f" {target} " in f" {normalise(output)} ")


def _last_number(text: str) -> float | None:
    number = answers.last_number(text)
    return None if number is None else float(number)


def last_number(output: str, example: Example) -> float:
    got, want = _last_number(output), _last_number(example.target or "")
    return float(got is not None and want is not None and abs(got - want) < 1e-9)


def _regex(pattern: str) -> Metric:
    compiled = re.compile(pattern, re.DOTALL)

    def score(output: str, example: Example) -> float:
        found = compiled.search(output)
        if found is None:
            return 0.0
        if example.target is None:
            return 1.0
        extracted = found.group(1) if compiled.groups else found.group(0)
        return float(normalise(extracted) == normalise(example.target))

    return score


def _json_object(text: str) -> dict | None:
    try:
        parsed = extract_json(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _json_field(field: str) -> Metric:
    def score(output: str, example: Example) -> float:
        parsed = _json_object(output)
        if parsed is None or field not in parsed:
            return 0.0
        return float(normalise(str(parsed[field])) == normalise(example.target or ""))

    return score


def _user_function(reference: str) -> Metric:
    module_name, _, function_name = reference.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise UserError(
            f"cannot load metric function '{reference}' ({error}); give it as module:function "
            "importable from the working directory",
            field="metric.name",
        ) from None
    if not callable(function):
        raise UserError(f"'{reference}' is not a function", field="metric.name")
    return function


BUILT_IN: dict[str, Metric] = {
    "exact_match": exact_match,
    "contains": contains,
    "last_number": last_number,
}


def answer_reader(spec: AnswerSpec) -> answers.AnswerReader:
    if spec.take == "last_number":
        return answers.last_number
    if spec.take == "last_label":
        if not any(label.strip() for label in spec.labels):
            raise UserError(
                "taking the last label needs the answer space, e.g. labels: [yes, no]",
                field="metric.answer.labels",
            )
        return answers.last_label(spec.labels)
    if not spec.pattern:
        raise UserError("taking the answer by regex needs 'pattern'", field="metric.answer.pattern")
    try:
        return answers.regex_group(spec.pattern)
    except re.error as error:
        raise UserError(f"invalid regex: {error}", field="metric.answer.pattern") from None


def _on_answer(metric: Metric, read: answers.AnswerReader) -> Metric:
    """The metric applied to the answer read from the output (an output with none scores 0)."""

    def score(output: str, example: Example) -> float:
        answer = read(output)
        return 0.0 if answer is None else metric(answer, example)

    return score


def resolve_metric(spec: MetricSpec) -> Metric | None:
    """The scoring function, or None for llm_judge (scored by the judge model)."""
    metric = _base_metric(spec)
    if spec.answer is None:
        return metric
    if metric is None:
        raise UserError(
            "llm_judge grades the whole output; metric.answer works with a metric that "
            "compares the answer with a target",
            field="metric.answer",
        )
    return _on_answer(metric, answer_reader(spec.answer))


def _base_metric(spec: MetricSpec) -> Metric | None:
    if spec.name in BUILT_IN:
        return BUILT_IN[spec.name]
    if spec.name == "regex":
        if not spec.pattern:
            raise UserError("the regex metric needs 'pattern'", field="metric.pattern")
        try:
            return _regex(spec.pattern)
        except re.error as error:
            raise UserError(f"invalid regex: {error}", field="metric.pattern") from None
    if spec.name == "json_field":
        if not spec.field:
            raise UserError("the json_field metric needs 'field'", field="metric.field")
        return _json_field(spec.field)
    if spec.name == "llm_judge":
        return None
    if ":" in spec.name:
        return _user_function(spec.name)
    known = ", ".join([*BUILT_IN, "regex", "json_field", "llm_judge", "module:function"])
    raise UserError(f"unknown metric '{spec.name}'; use one of {known}", field="metric.name")


DEFAULT_RUBRIC = (
    "The answer is correct, complete and directly responsive to the input; "
    "it follows the instructions and adds nothing invented."
)


def judge_messages(rubric: str, example: Example, output: str) -> list[dict[str, str]]:
    inputs = "\n".join(f"{name}: {value}" for name, value in example.inputs.items())
    reference = f"\nReference answer: {example.target}" if example.target else ""
    return [
        {
            "role": "system",
            "content": (
                "You grade answers strictly against a rubric. Reply with one integer from 0 "
                f"(fails the rubric) to 10 (fully meets it) and nothing else.\nRubric: {rubric}"
            ),
        },
        {"role": "user", "content": f"Input:\n{inputs}{reference}\n\nAnswer to grade:\n{output}"},
    ]


def _judge_score(reply: str | None) -> float | None:
    number = _last_number(reply or "")
    return None if number is None else min(max(number / 10.0, 0.0), 1.0)


@step("metric", pure=True)
async def metric(
    spec: MetricSpec,
    prompt_id: str,
    examples: list[Example],
    predictions: list[Prediction],
    judge: ModelSettings,
    concurrency: int,
) -> SplitScore:
    """Each prediction with its score; failed predictions keep score 0 and their error."""
    compare = resolve_metric(spec)
    if compare is not None:
        scored = []
        for example, prediction in zip(examples, predictions, strict=True):
            if prediction.error:
                scored.append(prediction)
                continue
            try:
                value = float(compare(prediction.output, example))
            except Exception as error:  # a user metric failing on one example scores it 0
                scored.append(prediction.model_copy(update={"error": f"metric: {error}"}))
                continue
            scored.append(prediction.model_copy(update={"score": min(max(value, 0.0), 1.0)}))
        return SplitScore(prompt_id=prompt_id, predictions=scored)

    rubric = spec.rubric or DEFAULT_RUBRIC
    gradable = [(e, p) for e, p in zip(examples, predictions, strict=True) if not p.error]
    verdicts = await active_gateway().complete_many(
        "judge", judge, [judge_messages(rubric, e, p.output) for e, p in gradable], concurrency
    )
    by_id = {}
    for (_, prediction), verdict in zip(gradable, verdicts, strict=True):
        value = _judge_score(verdict.response)
        error = verdict.error or (None if value is not None else "judge gave no score")
        by_id[prediction.example_id] = prediction.model_copy(
            update={"score": value or 0.0, "error": error}
        )
    return SplitScore(
        prompt_id=prompt_id,
        predictions=[by_id.get(p.example_id, p) for p in predictions],
    )
