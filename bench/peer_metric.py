"""The bench tasks' metrics, for the peers' own venvs, where the project is not installed.

The same rules as `tasks.metric.exact_match` and `last_number` (bench/peers.py checks
that they agree on every example before a run); the harness scores the test split with
the project's own functions.
"""

from __future__ import annotations

import re
import string

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _normalise(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def _last_number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def score(metric: str, output: str, target: str) -> float:
    if metric == "exact_match":
        return float(_normalise(output) == _normalise(target))
    if metric == "last_number":
        got, want = _last_number(output), _last_number(target)
        return float(got is not None and want is not None and abs(got - want) < 1e-9)
    raise ValueError(f"no peer metric '{metric}'")
