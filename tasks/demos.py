"""The demonstrations lever: a new set of worked examples for the current prompt.

The set is drawn from the train examples outside the batch it will be validated on
(a demonstration of a batch example would hand the batch its answer), never from val
or test. Bootstrapped, it prefers the examples the current prompt already got right,
with the model's own outputs as the answers (its form, its reasoning), as DSPy's
BootstrapFewShot does; labeled targets fill the rest, unless only the model's own
outputs may be shown (where it reasons before its answer). The examples alternate
between the targets, so a label set is shown evenly. The candidate is the current
instruction with the new set, validated like an instruction edit.
"""

from __future__ import annotations

import random

from prompt_descent.core.config import Demo, DemoSettings, Example, Prompt
from prompt_descent.core.results import Attempt, Candidate
from tasks.apply import repeat_of
from tasks.options import step


def draw_demos(
    pool: list[Example],
    right: dict[str, str],
    settings: DemoSettings,
    seed: int,
    own_outputs_only: bool = False,
) -> list[Demo]:
    """Up to `settings.count` demonstrations from `pool`, alternating between the targets;
    `own_outputs_only`: only examples with a right output in `right`, shown with it."""
    labeled = [e for e in pool if e.target is not None and (e.id in right or not own_outputs_only)]
    random.Random(seed).shuffle(labeled)
    bootstrapped = settings.source == "bootstrapped"
    if bootstrapped:  # a stable sort: the shuffled order within each kind
        labeled.sort(key=lambda e: e.id not in right)
    by_target: dict[str, list[Example]] = {}
    for example in labeled:
        by_target.setdefault(example.target, []).append(example)
    chosen: list[Example] = []
    while len(chosen) < settings.count and any(by_target.values()):
        for examples in by_target.values():
            if examples and len(chosen) < settings.count:
                chosen.append(examples.pop(0))
    return [
        Demo(inputs=e.inputs, output=right.get(e.id, e.target) if bootstrapped else e.target)
        for e in chosen
    ]


@step("demos", pure=True)
async def propose_demos(
    prompt: Prompt,
    pool: list[Example],
    right: dict[str, str],
    settings: DemoSettings,
    seed: int,
    history: list[Attempt],
    own_outputs_only: bool = False,
) -> Candidate:
    """The current prompt with a new demonstration set, or why there is none."""
    demos = draw_demos(pool, right, settings, seed, own_outputs_only)
    if not demos:
        missing = "right output of the model" if own_outputs_only else "labeled train example"
        return Candidate(prompt=None, rejected_because=f"no {missing} to show")
    candidate = prompt.with_demos(demos)
    return repeat_of(candidate, prompt, history) or Candidate(prompt=candidate)
