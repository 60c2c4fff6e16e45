"""What the statistical stop on val costs: how often it gives up on a candidate that was
not worse.

tasks.validate's race is run as a run runs it (the same order, chunk sizes at
concurrency 4, the same stop rules) against simulated answers: a current prompt right
on a fixed number of val examples, and a candidate that ties it or beats it by a few,
right on a random set that shares some of the current prompt's right answers. Every
such candidate should be accepted; the table gives the share the stop rejected, per
`early_reject_chance`, over many random draws. A tie is the hardest case: its
chance hovers near one half, and the race looks at it after every chunk.

    python bench/early_reject.py [--trials 1000]
"""

from __future__ import annotations

import argparse
import random

from _common import header, machine, markdown_table, now, write_section

from prompt_descent.core.config import Example, Prediction, SplitScore
from tasks.validate import Race, in_turn

CONCURRENCY = 4
CHANCES = [0.01, 0.003, 0.001]
# (val size, current prompt right, candidate right, right answers they share)
CASES = [
    (24, 12, 12, 8),
    (24, 12, 14, 8),
    (40, 20, 20, 12),
    (40, 20, 21, 12),
    (40, 20, 22, 12),
    (40, 20, 24, 12),
    (40, 30, 30, 25),
    (40, 30, 32, 26),
    (100, 50, 50, 30),
    (100, 50, 53, 30),
]


def rejected(rng: random.Random, case: tuple[int, int, int, int], chance: float) -> bool:
    size, current_right, candidate_right, shared = case
    numbers = list(range(size))
    rng.shuffle(numbers)
    current = set(numbers[:current_right])
    others = [n for n in numbers if n not in current]
    candidate = set(rng.sample(sorted(current), shared))
    candidate |= set(rng.sample(others, candidate_right - shared))
    scores = SplitScore(
        prompt_id="current",
        predictions=[
            Prediction(example_id=f"e{n}", output="", score=float(n in current))
            for n in range(size)
        ],
    )
    val = [Example(id=f"e{n}", inputs={"input": f"q{n}"}) for n in numbers]
    race = Race(in_turn(val, scores), scores, strict=False, early_reject_chance=chance)
    answers: list[float] = []
    while len(answers) < size:
        if race.lost(answers):
            return True
        chunk = race.examples[len(answers) : len(answers) + race.next_chunk(answers, CONCURRENCY)]
        answers += [float(int(example.id[1:]) in candidate) for example in chunk]
    return race.lost(answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    started, machine_line = now(), machine()
    rng = random.Random(args.seed)
    rows = []
    for case in CASES:
        size, current_right, candidate_right, shared = case
        shares = [
            sum(rejected(rng, case, chance) for _ in range(args.trials)) / args.trials
            for chance in CHANCES
        ]
        rows.append(
            [
                size,
                current_right,
                f"{candidate_right} ({candidate_right - current_right:+d})",
                shared,
                *(f"{share:.1%}" for share in shares),
            ]
        )
        print(rows[-1], flush=True)
    table = markdown_table(
        [
            "val",
            "current right",
            "candidate right",
            "both right",
            *(f"rejected at {chance}" for chance in CHANCES),
        ],
        rows,
    )
    print(table)
    body = (
        header(
            "Statistical stop on val: candidates lost (bench/early_reject.py)",
            machine_line,
            started,
        )  # fmt: skip
        + f"- what: tasks.validate's race at concurrency {CONCURRENCY} against simulated "
        f"answers, {args.trials:,} random draws per cell (seed {args.seed}); every candidate here "
        "ties the current prompt on val or beats it, so every rejection is a loss; "
        "`early_reject_chance: 0` rejects none of them\n\n" + table + "\n"
    )
    if not args.no_write:
        write_section("early_reject", body)


if __name__ == "__main__":
    main()
