"""Step 6: accept the candidate or reject it, always with the reason.

The accept rule, in one place: a candidate is accepted when it is strictly better on
the batch it was written for and not worse on the validation split. Ties on val are
accepted by default because the candidate fixed the batch without costing anything held
out; `val_ties: reject` asks for held-out evidence too, strictly better on val, and
`val_margin` for more of it: better by that many standard errors of the current val score,
where a gain of one or two examples on a small val split is as likely luck as an edit
that works.
Validate reads the same rule to stop a candidate early (tasks/validate.py).
`always_accept` keeps the original Tiny TextGrad behaviour: every usable revision is
taken, scored in full.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from prompt_descent.core.results import Decision, Validation
from tasks.options import step


class AcceptRule(BaseModel):
    """Strictly better on the batch, then on val at least the current prompt's score plus
    `val_margin` of its standard errors (strictly more, unless `val_ties_accepted`), with
    the statistical stop: validate gives a candidate up once its chance to reach its val
    target is below `early_reject_chance` (0: only once it certainly cannot)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    always_accept: bool = False
    early_reject_chance: float = 0.0  # checked where it is configured (RunConfig)
    val_ties_accepted: bool = True
    val_margin: float = 0.0


@step("decide", pure=True)
async def decide(validation: Validation, rule: AcceptRule) -> Decision:
    if rule.always_accept and validation.val_after is not None:
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
