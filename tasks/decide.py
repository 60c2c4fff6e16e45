"""Step 6: accept the candidate or reject it, always with the reason.

A candidate is accepted when it is strictly better on the batch it was written
for and not worse on the validation split. Ties on val are accepted because the
candidate fixed the batch without costing anything held out. `always_accept`
keeps the original Tiny TextGrad behaviour: every usable revision is taken.
"""

from __future__ import annotations

from prefect import task

from prompt_descent.core.results import Decision, Validation
from tasks.options import PURE_STEP_OPTIONS


def judge_validation(validation: Validation, always_accept: bool = False) -> Decision:
    if always_accept and validation.val_after is not None:
        return Decision(
            accepted=True,
            reason=(
                f"always accept: val {validation.val_before:.3f} -> {validation.val_after:.3f}"
            ),
        )
    if validation.stopped_because is not None:
        return Decision(accepted=False, reason=validation.stopped_because)
    # validate stops, with its reason, as soon as the batch or val rule is broken
    return Decision(
        accepted=True,
        reason=(
            f"better on the batch ({validation.batch_before:.3f} -> {validation.batch_after:.3f}), "
            f"val {validation.val_before:.3f} -> {validation.val_after:.3f}"
        ),
    )


@task(name="decide", task_run_name="decide {label}", **PURE_STEP_OPTIONS)
async def decide(validation: Validation, always_accept: bool = False, label: str = "") -> Decision:
    return judge_validation(validation, always_accept)
