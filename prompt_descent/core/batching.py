"""The order in which the training examples are shown: seeded, epoch by epoch."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from prompt_descent.core.config import Example


def planned_steps(train_size: int, batch_size: int, epochs: int, steps: int | None) -> int:
    return steps if steps is not None else epochs * math.ceil(train_size / batch_size)


def minibatches(
    train: list[Example], batch_size: int, seed: int, total_steps: int
) -> Iterator[list[Example]]:
    """`total_steps` batches; each epoch reshuffles the train split with its own seed."""
    produced, epoch = 0, 0
    while produced < total_steps:
        order = list(train)
        random.Random(f"{seed}/{epoch}").shuffle(order)
        for start in range(0, len(order), batch_size):
            if produced == total_steps:
                return
            yield order[start : start + batch_size]
            produced += 1
        epoch += 1
