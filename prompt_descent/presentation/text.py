"""How every view writes a score and a run's calls."""

from __future__ import annotations

from prompt_descent.core.config import Prompt
from prompt_descent.core.results import Usage


def score_text(value: float | None) -> str:
    """Three decimals, or '-' where there is no score."""
    return "-" if value is None else f"{value:.3f}"


def calls_text(usage: Usage) -> str:
    """'12', or '0 paid, 36 from the cache' when the cache served some."""
    if not usage.cached_calls:
        return str(usage.calls)
    return f"{usage.calls} paid, {usage.cached_calls} from the cache"


def prompt_sections(prompt: Prompt) -> list[tuple[str, str]]:
    """A prompt's parts as (title, text), in the order every view shows them."""
    sections = [("system", prompt.system), ("template", prompt.template)]
    if prompt.demos:
        sections.append((f"demonstrations ({len(prompt.demos)})", prompt.demos_text()))
    return sections
