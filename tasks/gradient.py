"""Step 3, backward: the gradient model explains how the prompt should change.

Metric mode: the text gradient is built from everything known about the failing
examples: the prompt, each input, the model's output, the target and the score; with
`right_shown`, also a few examples the prompt gets right, which an edit must keep.
Where the metric reads the answer from the end of a longer output (`metric.answer`), the
model reasons first: the gradient is told where the answer is read and what was read from
each output, and looks for the step where the reasoning went wrong, instead of asking
for the answer alone, first (which would teach the model to stop reasoning).
Feedback mode (no targets): it is a critique of the prompt by all its answers.
The gradient depends only on the current prompt and the batch, so one call serves
every proposal for the batch; the apply step is shown how the earlier ones fared.
"""

from __future__ import annotations

import json

from prompt_descent.core.answers import AnswerReader
from prompt_descent.core.config import (
    AnswerSpec,
    Example,
    ModelSettings,
    Prediction,
    Prompt,
    SplitScore,
)
from prompt_descent.core.results import Feedback
from prompt_descent.llm.gateway import active_gateway
from tasks.metric import answer_reader
from tasks.options import step

MAX_CASES_SHOWN = 8
MAX_ANSWER_SPACE = 12

# the batch is a handful of examples: a change naming their particulars fits only them
GENERAL = (
    "The changes must hold for every input of the task, not only for these examples: state "
    "them as general rules, without these examples' particular objects, names or numbers."
)

GRADIENT_SYSTEM = (
    "You are an expert prompt engineer. A language model was given a prompt and got the "
    "examples below wrong. Compare each model output with the expected answer, in content "
    "and in form (format, length, wording), and say why the prompt led to the difference. "
    "Then list the concrete changes to the prompt's instructions that would make the model "
    "give the expected answers. " + GENERAL + " Be brief: at most five bullet points. Do not "
    "write the new prompt."
)

REASONING_GRADIENT_SYSTEM = (
    "You are an expert prompt engineer. A language model was given a prompt and got the "
    "examples below wrong. It reasons, then answers, and its answer is read from the end of "
    "its output. For each example, find the step where the reasoning went wrong, or why no "
    "answer could be read, and say what in the prompt led there. Then list the concrete "
    "changes to the prompt's instructions that would make the model reason its way to the "
    "expected answers. " + GENERAL + " Be brief: at most five bullet points. Do not write "
    "the new prompt."
)

CUT_OFF = (
    "An output marked cut off wrote too much: it reached the token limit before the expected "
    "answer. The prompt must make the model give the expected answer first, in the expected "
    "form, and nothing before it."
)
REASONING_CUT_OFF = (
    "An output marked cut off reached the token limit before its answer: the prompt must "
    "keep the reasoning short enough for the answer to come within the limit."
)
ALL_CUT_OFF = (
    "None of them got to its answer, so this comes first: the prompt must ask for brief "
    "reasoning, a few short sentences, then the answer."
)


def cut_off_note(cases: list[tuple[Example, Prediction]], reasons: bool, limit: int | None) -> str:
    """How many of the outputs shown the token limit cut off, and what the prompt must do."""
    cut = sum(prediction.truncated for _, prediction in cases)
    if not cut:
        return ""
    at = f"the limit of {limit} tokens (about {limit * 3 // 4} words)" if limit else "the limit"
    note = f"{cut} of the {len(cases)} outputs shown were cut off at {at}. "
    note += REASONING_CUT_OFF if reasons else CUT_OFF
    if reasons and cut == len(cases):
        note += " " + ALL_CUT_OFF
    return "\n\n" + note


CRITIQUE_SYSTEM = (
    "You are an expert prompt engineer. Judge a prompt by the answers a language model gave "
    "with it. Critique it under four headings: 1. Clarity of the prompt: what is ambiguous "
    "or missing. 2. Accuracy of the answers: which are wrong, unsupported or off-task, and "
    "why. 3. Inputs where the answer is not available: do the answers say so, or invent one? "
    "4. Concrete suggestions: the specific changes to make to the prompt. Be brief."
)


def describe_prompt(prompt: Prompt) -> str:
    """The prompt in the JSON shape the apply step answers in, so the reply mirrors it."""
    return json.dumps({"system": prompt.system, "template": prompt.template}, ensure_ascii=False)


def _case(
    number: int, example: Example, prediction: Prediction, read: AnswerReader | None = None
) -> str:
    inputs = "\n".join(f"{name}: {value}" for name, value in example.inputs.items())
    expected = f"\nExpected: {example.target}" if example.target is not None else ""
    answer = prediction.output or "(empty)"
    cut = " (cut off at the token limit)" if prediction.truncated else ""
    answer_read = ""
    if read is not None:
        answer_read = f"\nAnswer read from it: {read(prediction.output) or '(none)'}"
        if prediction.truncated:  # the last label it mentioned, mid-reasoning
            answer_read += " (from an output cut off before its answer: not an answer it gave)"
    return (
        f"Example {number} (score {prediction.score:.2f}):\n{inputs}\n"
        f"Model output{cut}: {answer}{answer_read}{expected}"
    )


def answer_space(examples: list[Example]) -> list[str]:
    """The targets, when they come from a small set (labels, choices): a strong hint of form."""
    targets = sorted({e.target for e in examples if e.target is not None})
    return targets if len(targets) <= MAX_ANSWER_SPACE else []


def gradient_messages(
    prompt: Prompt,
    cases: list[tuple[Example, Prediction]],
    mode: str = "metric",
    answers: list[str] = (),
    right: list[tuple[Example, Prediction]] = (),
    answer: AnswerSpec | None = None,
    token_limit: int | None = None,
) -> list[dict[str, str]]:
    read = answer_reader(answer) if answer is not None else None
    shown = "\n\n".join(_case(n, *case, read) for n, case in enumerate(cases, start=1))
    if answer is not None:
        shown += f"\n\nThe answer is read from each output as {answer.rule}."
    shown += cut_off_note(cases, answer is not None, token_limit)
    if answers:
        shown += (
            "\n\nEvery expected answer in this task is one of: "
            + ", ".join(repr(a) for a in answers)
            + "."
        )
    if right:
        kept = "\n\n".join(
            _case(n, *case, read) for n, case in enumerate(right, start=len(cases) + 1)
        )
        shown += "\n\nRight outputs, for contrast: the changes must keep these right.\n\n" + kept
    if mode == "feedback":
        system, heading, ask = CRITIQUE_SYSTEM, "Answers", "Your critique"
    else:
        system = GRADIENT_SYSTEM if answer is None else REASONING_GRADIENT_SYSTEM
        heading, ask = "Wrong outputs", "Your diagnosis and the changes"
    return [
        {"role": "system", "content": system},
        {
            "role": "user",
            "content": (
                f"The prompt:\n{describe_prompt(prompt)}\n\n{heading}:\n\n{shown}\n\n{ask}:"
            ),
        },
    ]


@step("gradient")
async def gradient(
    prompt: Prompt,
    examples: list[Example],
    scores: SplitScore,
    settings: ModelSettings,
    mode: str = "metric",
    answers: list[str] = (),
    right_shown: int = 0,
    answer: AnswerSpec | None = None,
    token_limit: int | None = None,
) -> Feedback:
    """Metric mode shows the failing examples, then up to `right_shown` right ones;
    feedback mode all of them, worst first."""
    by_id = {e.id: e for e in examples}
    shown = sorted(scores.predictions, key=lambda p: p.score)
    right: list[Prediction] = []
    if mode == "metric":
        right = [p for p in shown if p.score >= 1.0][:right_shown]
        shown = [p for p in shown if p.score < 1.0]
    cases = [(by_id[p.example_id], p) for p in shown][:MAX_CASES_SHOWN]
    kept = [(by_id[p.example_id], p) for p in right]
    call = await active_gateway().complete(
        "gradient",
        settings,
        gradient_messages(prompt, cases, mode, answers, kept, answer, token_limit),
    )
    return Feedback(prompt_id=prompt.id, text=(call.response or "").strip(), failures=len(cases))
