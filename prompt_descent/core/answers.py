"""The answer inside a longer output: a model that reasons first gives its answer last.

Each reader returns the answer as text, or None when the output holds none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

AnswerReader = Callable[[str], str | None]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def last_number(text: str) -> str | None:
    """The last number written in the text, without thousands separators."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    number = found[-1].replace(",", "")
    try:
        float(number)
    except ValueError:
        return None
    return number


def last_label(labels: Iterable[str]) -> AnswerReader:
    """The label of the answer space that the text mentions last, spelled as in `labels`.

    A label counts only as a whole word, in any case. Where one label holds another
    ("not plausible", "plausible"), the longer one wins at the same place.
    """
    spellings = {label.casefold(): label for label in labels if label.strip()}
    if not spellings:
        raise ValueError("the answer space has no label")
    alternatives = "|".join(re.escape(label) for label in sorted(spellings, key=len, reverse=True))
    pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def read(text: str) -> str | None:
        found = pattern.findall(text)
        return spellings[found[-1].casefold()] if found else None

    return read


def regex_group(pattern: str) -> AnswerReader:
    """The first capture group of the pattern's last match (the whole match if it has none).

    Raises re.error for a pattern that does not compile.
    """
    compiled = re.compile(pattern, re.DOTALL)

    def read(text: str) -> str | None:
        matches = list(compiled.finditer(text))
        if not matches:
            return None
        last = matches[-1]
        return last.group(1) if compiled.groups else last.group(0)

    return read
