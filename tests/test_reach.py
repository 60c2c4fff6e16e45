"""prompt_descent.core.reach: the chance a candidate still reaches a score sum."""

from __future__ import annotations

import itertools

import pytest

from prompt_descent.core.reach import Group, beta_binomial, chance_to_reach


def test_with_nothing_seen_every_count_is_as_likely() -> None:
    assert beta_binomial(6, 1.0, 1.0) == pytest.approx([1 / 7] * 7)


@pytest.mark.parametrize(("n", "right", "wrong"), [(0, 1.0, 1.0), (9, 3.0, 1.0), (40, 1.5, 7.25)])
def test_counts_cover_every_outcome_once(n: int, right: float, wrong: float) -> None:
    pmf = beta_binomial(n, right, wrong)
    assert len(pmf) == n + 1
    assert sum(pmf) == pytest.approx(1.0)
    mean = sum(k * p for k, p in enumerate(pmf))
    assert mean == pytest.approx(n * right / (right + wrong))


def brute_force(needed: int, groups: tuple[Group, Group]) -> float:
    """Sum over every outcome of the unscored examples, one posterior rate per group."""
    first, second = (
        beta_binomial(g.unscored, 1 + sum(g.scores), 1 + len(g.scores) - sum(g.scores))
        for g in groups
    )
    return sum(
        p * q
        for (k, p), (j, q) in itertools.product(enumerate(first), enumerate(second))
        if k + j >= needed
    )


@pytest.mark.parametrize("needed", range(-1, 12))
def test_the_chance_adds_up_both_groups(needed: int) -> None:
    groups = (Group([0.0, 0.0, 1.0], 4), Group([1.0, 0.0], 6))
    assert chance_to_reach(needed, False, groups) == pytest.approx(brute_force(needed, groups))
    # more than `needed` is at least one more
    assert chance_to_reach(needed, True, groups) == pytest.approx(brute_force(needed + 1, groups))


def test_out_of_reach_is_no_chance_and_already_there_is_certain() -> None:
    groups = (Group([0.0], 3), Group([], 2))
    assert chance_to_reach(5.5, False, groups) == 0.0
    assert chance_to_reach(5.0, True, groups) == 0.0
    assert chance_to_reach(0.0, False, groups) == 1.0


def test_each_further_wrong_answer_lowers_the_chance() -> None:
    chances = [
        chance_to_reach(10, False, (Group([0.0] * wrong, 20 - wrong), Group([1.0], 10)))
        for wrong in range(8)
    ]
    assert all(later < earlier for earlier, later in itertools.pairwise(chances))
