"""A deterministic demo model for the example configs, with no real model.

`PROMPT_DESCENT_FAKE_SCRIPT=prompt_descent.testing.demo:demo_script` serves it as `fake/...`
models (see prompt_descent/llm/gateway.py), in this process and in the flow runs a Prefect
worker starts, so a deployment can be exercised end to end in seconds.
"""

from __future__ import annotations

import json
import re

_STOPWORD_TEXT = (
    "what when where which who whom whose why how does did do is are was were the a an of to "
    "in on for by with and or this that it its from at be been has have had will would can "
    "could should their there they them you your"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
YES_NO = "Answer with exactly one word: yes or no."
STRICT = "Say yes only if the text itself contains the answer to the question."


def _overlap(text: str, question: str) -> float:
    """Share of the question's content words (5-letter stems) that occur in the text."""

    def stems(s: str) -> list[str]:
        return [w[:5] for w in re.findall(r"[a-z0-9]+", s.lower()) if w not in _STOPWORDS]

    asked = [w for w in stems(question) if len(w) > 2]
    present = set(stems(text))
    return sum(w in present for w in asked) / max(len(asked), 1)


def _field(message: str, name: str) -> str:
    found = re.search(rf"^{name}:\s*(.*)$", message, re.MULTILINE)
    return found.group(1) if found else ""


def _current_prompt(message: str) -> tuple[str, str]:
    """The first prompt shown in the message: a JSON object with "system" (or tagged text)."""
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", message)):
        try:
            value, _ = decoder.raw_decode(message, start)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("system"), str):
            return value["system"], value.get("template") or "{input}"
    tagged = re.search(
        r"<system>\n(.*?)\n</system>.*?<template>\n(.*?)\n</template>", message, re.S
    )
    if tagged:
        return tagged.group(1), tagged.group(2)
    raise ValueError("no prompt in the message")


def _qa_reply(system: str, user: str) -> str | None:
    """The examples' QA prompts (examples/qa_pairs.yaml, rephrase.yaml): well-formed JSON."""
    if '"pairs"' in system and user.startswith("Text: "):
        sentence = user.removeprefix("Text: ").split(". ")[0].rstrip(".")
        return json.dumps({"pairs": [{"question": f"What does the text say? ({sentence[:40]})",
                                      "answer": sentence}]})  # fmt: skip
    if '"rephrasings"' in system and user.startswith("Question: "):
        question = user.removeprefix("Question: ").rstrip("?")
        forms = ("Tell me: {}?", "I would like to know: {}?", "Could you say: {}?")
        return json.dumps({"rephrasings": [form.format(question) for form in forms]})
    return None


def demo_script(model: str, messages: list[dict[str, str]]) -> str:
    """A stand-in for every role on the contains-answer task (text + question -> yes/no),
    and a task model that answers the QA examples' prompts with valid JSON.

    The task model rambles until the prompt asks for yes or no; then it answers by word
    overlap, more strictly once the prompt says the text must contain the answer. The
    gradient and apply roles add those two instructions in turn, so a run improves in
    two accepted steps: exact match about 0.0 -> 0.75 -> 0.83 on the shipped data.
    """
    system = messages[0]["content"]
    user = messages[-1]["content"]
    if "prompt engineer" in system:
        if YES_NO.lower() not in user.lower():
            return "The outputs are sentences, but the expected answers are 'yes' or 'no'."
        return "Several answers say yes although the text does not contain the answer."
    if system.startswith(("You improve prompts", "You tidy prompts")):
        # the first request shows the prompt; a repair or a retry follows it
        current, template = _current_prompt(messages[1]["content"])
        addition = YES_NO if YES_NO not in current else STRICT
        improved = current if addition in current else f"{current} {addition}"
        return json.dumps({"system": improved, "template": template})
    if system.startswith("You grade answers"):
        return "10"
    qa = _qa_reply(system, user)
    if qa is not None:
        return qa
    text, question = _field(user, "Text"), _field(user, "Question")
    if YES_NO not in system:
        return f"The text is about {' '.join(text.split()[:4])}."
    threshold = 0.6 if STRICT in system else 0.4
    return "yes" if _overlap(text, question) >= threshold else "no"
