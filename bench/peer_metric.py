"""The bench tasks' metrics, for the peers' own venvs, where the project is not installed.

The same rules as `tasks.metric.exact_match` and `last_number`, and `metric.answer`'s
last label (bench/peers.py checks that they agree on every test output); the harness
scores the test split with the project's own functions. The answer readers are the
project's own `prompt_descent.core.answers` (standard library only), on PYTHONPATH.
"""

from __future__ import annotations

import string

from prompt_descent.core import answers

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _normalise(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def _number(text: str) -> float | None:
    number = answers.last_number(text)
    return None if number is None else float(number)


def score(metric: dict, output: str, target: str) -> float:
    """`metric` as the run config gives it: {name, answer: {take: last_label | last_number,
    labels}}."""
    answer = metric.get("answer")
    if answer is not None:
        readers = {"last_number": answers.last_number}
        if answer["take"] == "last_label":
            readers["last_label"] = answers.last_label(answer["labels"])
        if answer["take"] not in readers:
            raise ValueError(f"no peer answer reader '{answer['take']}'")
        read = readers[answer["take"]](output)
        if read is None:
            return 0.0
        output = read
    if metric["name"] == "exact_match":
        return float(_normalise(output) == _normalise(target))
    if metric["name"] == "last_number":
        got, want = _number(output), _number(target)
        return float(got is not None and want is not None and abs(got - want) < 1e-9)
    raise ValueError(f"no peer metric '{metric['name']}'")
