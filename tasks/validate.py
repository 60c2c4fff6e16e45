"""Step 5, the guard: score the candidate on the batch, then on the validation split.

A candidate must be strictly better than the current prompt on the batch it was
written for, then not worse on val (or strictly better, or better by a margin of the
current val score's standard errors: AcceptRule). Both are scored the
same frugal way, in chunks no larger than the number of further examples that could
settle it, and scoring stops as soon as it is settled:

- certainly, on both: the candidate cannot reach the target even if every remaining
  example were right. The examples the current prompt does worst on come first, where
  a candidate that cannot win shows it soonest (on the batch, a candidate that fixes
  none of the failing examples is rejected without predicting the passing ones);
- on val, also with `early_reject_chance`: the chance that the remaining examples
  still lift it to the target (prompt_descent.core.reach) is below that. The examples the
  current prompt got right and the others are then taken in turn, in proportion, so
  that the candidate's scores so far say something about both.

With `always_accept` (Tiny TextGrad) nothing stops early: every score is reported.
Both settings are the run's AcceptRule (tasks/decide.py).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from functools import cached_property

from prompt_descent.core.config import Example, Prediction, Prompt, SplitScore
from prompt_descent.core.reach import TOLERANCE, Group, chance_to_reach, fewest_needed
from prompt_descent.core.results import Candidate, Validation
from tasks.decide import AcceptRule
from tasks.options import step
from tasks.score import Scorer


def hardest_first(examples: list[Example], current: SplitScore) -> list[Example]:
    score_of = {p.example_id: p.score for p in current.predictions}
    return sorted(examples, key=lambda e: score_of.get(e.id, 0.0))


def current_right(current: SplitScore) -> set[str]:
    """The examples the current prompt scored 1 on: there a candidate can only tie or lose."""
    return {p.example_id for p in current.predictions if p.score >= 1.0 - TOLERANCE}


def in_turn(examples: list[Example], current: SplitScore) -> list[Example]:
    """The examples the current prompt got wrong (hardest first) and those it got right,
    merged so that every prefix holds each group in proportion to its size."""
    right = current_right(current)
    ordered = hardest_first(examples, current)
    groups = ([e for e in ordered if e.id not in right], [e for e in ordered if e.id in right])
    keyed = [
        ((position + 0.5) / len(group), number, position, example)
        for number, group in enumerate(groups)
        for position, example in enumerate(group)
    ]
    return [example for *_, example in sorted(keyed, key=lambda row: row[:3])]


@dataclass(frozen=True)
class Race:
    """A candidate scored, in `examples` order, against the current prompt's score sum on
    one split, raised by `margin` standard errors of that sum; `early_reject_chance` > 0
    also gives up once its chance to reach the target is below it."""

    examples: list[Example]
    current: SplitScore
    strict: bool
    early_reject_chance: float = 0.0
    margin: float = 0.0

    @cached_property
    def standard_error(self) -> float:
        """Of the current prompt's score sum, read as n draws of its per-example score."""
        scores = [p.score for p in self.current.predictions]
        return math.sqrt(len(scores)) * statistics.pstdev(scores) if scores else 0.0

    @cached_property
    def target(self) -> float:
        return sum(p.score for p in self.current.predictions) + self.margin * self.standard_error

    @cached_property
    def _current_right(self) -> set[str]:
        return current_right(self.current)

    def needed(self, scores: list[float]) -> int:
        """The right answers the unscored examples must still give for the candidate to win."""
        return fewest_needed(self.target - sum(scores), self.strict)

    def reachable(self, scores: list[float]) -> float:
        return sum(scores) + len(self.examples) - len(scores)

    def chance(self, scores: list[float]) -> float:
        right = self._current_right
        scored: tuple[list[float], list[float]] = ([], [])
        unscored = [0, 0]
        for position, example in enumerate(self.examples):
            group = int(example.id in right)
            if position < len(scores):
                scored[group].append(scores[position])
            else:
                unscored[group] += 1
        groups = (Group(scored[0], unscored[0]), Group(scored[1], unscored[1]))
        return chance_to_reach(self.target - sum(scores), self.strict, groups)

    def certainly_lost(self, scores: list[float]) -> bool:
        return self.needed(scores) > len(self.examples) - len(scores)

    def lost(self, scores: list[float]) -> bool:
        if self.certainly_lost(scores):
            return True
        return self.early_reject_chance > 0 and self.chance(scores) < self.early_reject_chance

    def next_chunk(self, scores: list[float], concurrency: int) -> int:
        """The fewest further examples whose failure would settle the race, at most
        `concurrency`."""
        unscored = len(self.examples) - len(scores)
        # that many failures leave fewer unscored examples than the candidate needs right
        certain = max(1, unscored - self.needed(scores) + 1)
        most = min(concurrency, unscored, certain)
        if self.early_reject_chance == 0 or not self.lost(scores + [0.0] * most):
            return most
        fewest, enough = 1, most  # each failure lowers the chance: search the first that settles
        while fewest < enough:
            middle = (fewest + enough) // 2
            if self.lost(scores + [0.0] * middle):
                enough = middle
            else:
                fewest = middle + 1
        return fewest


async def run_race(prompt: Prompt, race: Race, scorer: Scorer, always_accept: bool) -> SplitScore:
    """The candidate's scores until the race is lost (all of them with `always_accept`)."""
    scored: list[Prediction] = []
    while len(scored) < len(race.examples):
        scores = [p.score for p in scored]
        if not always_accept and race.lost(scores):
            break
        size = len(race.examples) if always_accept else race.next_chunk(scores, scorer.concurrency)
        chunk = race.examples[len(scored) : len(scored) + size]
        scored.extend((await scorer.score_within_step(prompt, chunk)).predictions)
    return SplitScore(prompt_id=prompt.id, predictions=scored)


def _scores(split: SplitScore) -> list[float]:
    return [p.score for p in split.predictions]


def _after(race: Race, scores: list[float]) -> str:
    return f"after {len(scores)}/{len(race.examples)} examples"


@step("validate")
async def validate(
    candidate: Candidate,
    batch: list[Example],
    current_batch: SplitScore,
    val: list[Example],
    current_val: SplitScore,
    scorer: Scorer,
    rule: AcceptRule,
) -> Validation:
    """The candidate's scores on the batch, then on val, until `rule` settles it."""
    result = Validation(batch_before=current_batch.score, val_before=current_val.score)
    if candidate.prompt is None:
        return result.model_copy(update={"stopped_because": candidate.rejected_because})
    prompt = candidate.prompt

    batch_race = Race(hardest_first(batch, current_batch), current_batch, strict=True)
    on_batch = await run_race(prompt, batch_race, scorer, rule.always_accept)
    scores = _scores(on_batch)
    result = result.model_copy(update={"batch": on_batch})
    complete = len(scores) == len(batch)
    if complete:
        result = result.model_copy(update={"batch_after": on_batch.score})
    if not rule.always_accept and batch_race.certainly_lost(scores):
        why = (
            f" ({on_batch.score:.3f} vs {current_batch.score:.3f})"
            if complete
            else f": at most {batch_race.reachable(scores) / len(batch):.3f} vs "
            f"{current_batch.score:.3f} {_after(batch_race, scores)}"
        )
        return result.model_copy(update={"stopped_because": f"not better on the batch{why}"})

    chance = rule.early_reject_chance
    order = in_turn(val, current_val) if chance > 0 else hardest_first(val, current_val)
    strict = not rule.val_ties_accepted
    val_race = Race(
        order, current_val, strict=strict, early_reject_chance=chance, margin=rule.val_margin
    )
    on_val = await run_race(prompt, val_race, scorer, rule.always_accept)
    scores = _scores(on_val)
    result = result.model_copy(update={"val": on_val, "val_examples_scored": len(scores)})
    if rule.always_accept or not val_race.lost(scores):
        return result.model_copy(update={"val_after": on_val.score})
    target = f"{'beat' if strict else 'reach'} val {val_race.target / len(val):.3f}"
    if rule.val_margin > 0:
        target += f" ({current_val.score:.3f} + {rule.val_margin:g} standard error)"
    if val_race.certainly_lost(scores):
        why = (
            f"cannot {target}: at most "
            f"{val_race.reachable(scores) / len(val):.3f} {_after(val_race, scores)}"
        )
    else:
        why = (
            f"unlikely to {target}: {val_race.chance(scores):.1%} chance {_after(val_race, scores)}"
        )
    return result.model_copy(update={"stopped_because": why})
