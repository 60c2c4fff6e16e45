"""Step 4, the optimizer step: rewrite the prompt along the text gradient.

The apply model answers in JSON, validated by pydantic (structured.complete_structured:
a JSON schema where the model honours one, one repair request for a reply that does not
parse). A candidate that fails the checks below gets one corrective try. In feedback
mode a clean-up pass then strips meta-commentary ("Here is the revised prompt…") so the
result is usable as is.
A candidate that is empty, unchanged, already tried, or that drops or invents a
placeholder is rejected here, before any prediction is spent on it.
"""

from __future__ import annotations

import json
import re

from pydantic import BaseModel

from prompt_descent.core.config import ModelSettings, Prompt, placeholders, template_error
from prompt_descent.core.results import Attempt, Candidate, Feedback
from prompt_descent.llm.structured import complete_structured
from tasks.gradient import describe_prompt
from tasks.options import step

APPLY_SYSTEM = (
    "You improve prompts for a language model. Given the current prompt, feedback on its "
    "mistakes and earlier attempts and how they fared, write an improved prompt. Keep every "
    "{placeholder} of the template exactly as it is and add no new ones: the template is filled "
    "from the data. Reply with only a JSON object: "
    '{"system": "<the new system prompt>", "template": "<the new template>"}.'
)


CLEAN_SYSTEM = (
    "You tidy prompts. Remove from the prompt everything that is not an instruction to the "
    "model: notes on what was changed and why, 'Here is the improved prompt', greetings, "
    "headings around it. Keep every instruction and every {placeholder} exactly as written. "
    'Reply with only a JSON object: {"system": "<the system prompt>", "template": "<the '
    'template>"}.'
)


# Small models echo the markup a prompt was shown in: <system>…</system>.
_WRAPPER_TAGS = re.compile(r"^\s*<(system|template)>\s*|\s*</(system|template)>\s*$")


class ProposedPrompt(BaseModel):
    system: str
    template: str | None = None


def apply_messages(
    prompt: Prompt,
    feedback: Feedback,
    history: list[Attempt],
    rejections: list[str] = (),
    variant: tuple[int, int] = (1, 1),
) -> list[dict[str, str]]:
    tried = "\n\n".join(f"Attempt ({a.outcome}):\n{describe_prompt(a.prompt)}" for a in history)
    refused = "".join(f"\n- {reason}" for reason in rejections)
    number, of = variant
    # a race asks for distinct variants; the wording differs per variant, so neither the
    # call cache nor Prefect's serves one reply for all of them
    race = (
        f"This is variant {number} of {of} written from this feedback at once: make a "
        "different change from what the other variants would make.\n\n"
        if of > 1
        else ""
    )
    return [
        {"role": "system", "content": APPLY_SYSTEM},
        {
            "role": "user",
            "content": (
                f"Current prompt:\n{describe_prompt(prompt)}\n\nFeedback:\n{feedback.text}\n\n"
                + (f"Earlier attempts (do not repeat them):\n{tried}\n\n" if tried else "")
                + (
                    f"Proposals for these examples that could not be used:{refused}\n\n"
                    if refused
                    else ""
                )
                + race
                + "The improved prompt as JSON:"
            ),
        },
    ]


def _rejected(reason: str, repeats: Prompt | None = None) -> Candidate:
    return Candidate(prompt=None, rejected_because=reason, repeats=repeats)


def check_candidate(current: Prompt, proposal: ProposedPrompt, history: list[Attempt]) -> Candidate:
    system = _WRAPPER_TAGS.sub("", proposal.system).strip()
    template = _WRAPPER_TAGS.sub("", proposal.template or "").strip() or current.template
    if not system:
        return _rejected("empty candidate prompt")
    problem = template_error(template)
    if problem:
        return _rejected(f"candidate template unusable: {problem}")
    lost = current.placeholders() - placeholders(template)
    if lost:
        names = ", ".join(f"{{{n}}}" for n in sorted(lost))
        return _rejected(f"candidate drops placeholder {names}")
    invented = placeholders(template) - current.placeholders()
    if invented:
        names = ", ".join(f"{{{n}}}" for n in sorted(invented))
        return _rejected(f"candidate adds unknown placeholder {names}")
    candidate = Prompt(system=system, template=template, demos=current.demos)
    return repeat_of(candidate, current, history) or Candidate(prompt=candidate)


def repeat_of(candidate: Prompt, current: Prompt, history: list[Attempt]) -> Candidate | None:
    """The rejection of a candidate that is the current prompt or an earlier one, else None."""
    if candidate.id == current.id:
        return _rejected("candidate is identical to the current prompt", candidate)
    if any(candidate.id == a.prompt.id for a in history):
        return _rejected("candidate was already tried", candidate)
    return None


async def _ask_for_prompt(
    settings: ModelSettings, messages: list[dict[str, str]]
) -> tuple[ProposedPrompt | None, str, str | None]:
    """The proposal, the raw reply, and why there is none (after one repair request)."""
    result = await complete_structured("apply", settings, messages, ProposedPrompt)
    return result.value, result.raw, None if result.error is None else f"apply {result.error}"


def clean_messages(proposal: ProposedPrompt) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": CLEAN_SYSTEM},
        {"role": "user", "content": json.dumps(proposal.model_dump(), ensure_ascii=False)},
    ]


@step("apply")
async def apply(
    prompt: Prompt,
    feedback: Feedback,
    history: list[Attempt],
    settings: ModelSettings,
    clean: bool = False,
    rejections: list[str] = (),
    variant: tuple[int, int] = (1, 1),
) -> Candidate:
    messages = apply_messages(prompt, feedback, history, rejections, variant)
    proposal, reply, problem = await _ask_for_prompt(settings, messages)
    if proposal is None:
        return Candidate(prompt=None, raw=reply, rejected_because=problem)
    candidate = check_candidate(prompt, proposal, history)
    if candidate.rejected_because is not None:
        # one corrective try: a candidate that fails the checks would waste the whole proposal
        retry = messages + [
            {"role": "assistant", "content": reply},
            {
                "role": "user",
                "content": (
                    f"That prompt was rejected: {candidate.rejected_because}. Write a different "
                    "prompt that makes the changes the feedback asks for, as JSON."
                ),
            },
        ]
        proposal, reply, problem = await _ask_for_prompt(settings, retry)
        if proposal is None:
            return Candidate(prompt=None, raw=reply, rejected_because=problem)
    if clean:
        # a clean-up that fails leaves the revision as it was: it is still a usable prompt
        cleaned, _, _ = await _ask_for_prompt(settings, clean_messages(proposal))
        proposal = cleaned or proposal
    return check_candidate(prompt, proposal, history).model_copy(update={"raw": reply})
