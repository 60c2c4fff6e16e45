"""The chance that a candidate still reaches a score sum on the examples not yet scored.

The examples fall in two groups by how the current prompt did on them: where it
scored 1 the candidate can only tie or fall behind, elsewhere it can also pull ahead,
and a candidate written to fix one batch usually behaves differently in the two. In
each group the candidate's mean score has a uniform Beta(1, 1) prior, updated with the
scores it got there (a fractional score counts as that fraction of a right answer).
The group's unscored examples then sum to a beta-binomial count, and the chance is
that the two counts together make up what the candidate still needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# sums of float scores differ in the last bits with the order they were added in
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Group:
    """The candidate's scores so far on one group's examples, and how many are left."""

    scores: list[float]
    unscored: int


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def beta_binomial(n: int, right: float, wrong: float) -> list[float]:
    """P(k of n right) for k = 0..n, the rate drawn from Beta(right, wrong)."""
    base = math.lgamma(n + 1) - _log_beta(right, wrong)
    return [
        math.exp(
            base - math.lgamma(k + 1) - math.lgamma(n - k + 1) + _log_beta(k + right, n - k + wrong)
        )
        for k in range(n + 1)
    ]


def _unscored_sum(group: Group) -> list[float]:
    right = sum(group.scores)
    return beta_binomial(group.unscored, 1.0 + right, 1.0 + len(group.scores) - right)


def fewest_needed(needed: float, strict: bool) -> int:
    """The fewest right answers that add up to more than (`strict`) or at least `needed`."""
    if strict:
        return math.floor(needed + TOLERANCE) + 1
    return math.ceil(needed - TOLERANCE)


def chance_to_reach(needed: float, strict: bool, groups: tuple[Group, Group]) -> float:
    """The chance that the unscored examples of both groups add up to `needed` (`strict`:
    more than it)."""
    least = fewest_needed(needed, strict)
    if least <= 0:
        return 1.0
    if least > sum(group.unscored for group in groups):
        return 0.0
    first, second = (_unscored_sum(group) for group in groups)
    # at_least[j]: the chance the second group gives j or more
    at_least = [0.0] * (len(second) + 1)
    for j in range(len(second) - 1, -1, -1):
        at_least[j] = at_least[j + 1] + second[j]
    chance = 0.0
    for k, p in enumerate(first):
        short = least - k
        if short <= 0:
            chance += p * at_least[0]
        elif short < len(at_least):
            chance += p * at_least[short]
    return min(1.0, chance)
