"""Reference loop: an Ape-style TextGradientTrainer, from its published description.

Shuffle the train split (seeded) into batches of 4. Per batch: score the current
best prompt on the batch and skip the batch if it is perfect; otherwise up to 5
proposals, each one gradient call per failing example, one apply call that merges
those gradients into a new prompt, then the candidate is scored on the batch and,
if strictly better there, on the whole train set; it is accepted if strictly better
on the train set too (Ape selects on train). The first accepted proposal ends the
batch. Plain asyncio + litellm: no cache, no Prefect, no DuckDB.

The messages are prompt-descent's own (tasks.gradient.gradient_messages with one
case, tasks.apply.apply_messages/ProposedPrompt/check_candidate), so that a
comparison isolates the loop design. Predictions made to check a candidate are
counted under the role "validate".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from _common import Caller, Metric, OutOfBudget, mean, score

from prompt_descent.core.batching import minibatches, planned_steps
from prompt_descent.core.config import Example, Models, Prediction, Prompt
from prompt_descent.core.results import Feedback
from prompt_descent.llm.structured import parse_reply
from tasks.apply import ProposedPrompt, apply_messages, check_candidate
from tasks.gradient import gradient_messages

try:  # the hint of the answer set prompt-descent's gradient gets, when the core has it
    from tasks.gradient import answer_space
except ImportError:  # pragma: no cover - older core
    answer_space = None


@dataclass
class LoopResult:
    best: Prompt
    caller: Caller
    # (step, proposal, accepted, reason); proposal 0 = batch skipped
    decisions: list[tuple[int, int, bool, str]] = field(default_factory=list)
    stop_reason: str | None = None


async def ape_loop(
    prompt: Prompt,
    train: list[Example],
    metric: Metric,
    models: Models,
    caller: Caller,
    batch_size: int = 4,
    max_proposals: int = 5,
    seed: int = 0,
    epochs: int = 1,
    steps: int | None = None,
    concurrency: int = 1,
) -> LoopResult:
    result = LoopResult(best=prompt, caller=caller)
    best_train: float | None = None  # the best prompt's whole-train score, once known
    total = planned_steps(len(train), batch_size, epochs, steps)
    hint = (answer_space(train),) if answer_space is not None else ()
    try:
        for step, batch in enumerate(minibatches(train, batch_size, seed, total), start=1):
            best = result.best
            on_batch = await score(caller, "predict", best, batch, models.task, metric, concurrency)
            batch_score = mean([s for _, _, s in on_batch])
            if batch_score >= 1.0:
                result.decisions.append((step, 0, False, "batch perfect"))
                continue
            failing = [case for case in on_batch if case[2] < 1.0]
            for proposal in range(1, max_proposals + 1):
                gradients = await caller.many(
                    "gradient",
                    models.gradient,
                    [
                        gradient_messages(
                            best,
                            [(e, Prediction(example_id=e.id, output=out, score=s))],
                            "metric",
                            *hint,
                        )
                        for e, out, s in failing
                    ],
                    concurrency,
                )
                feedback = Feedback(
                    prompt_id=best.id,
                    text="\n\n".join(g.strip() for g in gradients),
                    failures=len(failing),
                )
                reply = await caller.ask(
                    "apply", models.apply, apply_messages(best, feedback, []), json_mode=True
                )
                proposed, _problem = parse_reply(reply, ProposedPrompt)
                if proposed is None:
                    result.decisions.append((step, proposal, False, "apply reply not JSON"))
                    continue
                candidate = check_candidate(best, proposed, [])
                if candidate.prompt is None:
                    result.decisions.append((step, proposal, False, candidate.rejected_because))
                    continue
                new = candidate.prompt
                cand_batch = await score(
                    caller, "validate", new, batch, models.task, metric, concurrency
                )
                after = mean([s for _, _, s in cand_batch])
                if after <= batch_score:
                    result.decisions.append((step, proposal, False, "not better on the batch"))
                    continue
                if best_train is None:
                    scored = await score(
                        caller, "validate", best, train, models.task, metric, concurrency
                    )
                    best_train = mean([s for _, _, s in scored])
                scored = await score(
                    caller, "validate", new, train, models.task, metric, concurrency
                )
                new_train = mean([s for _, _, s in scored])
                if new_train <= best_train:
                    result.decisions.append((step, proposal, False, "not better on train"))
                    continue
                result.decisions.append((step, proposal, True, "better on batch and train"))
                result.best, best_train = new, new_train
                break
    except OutOfBudget as spent:
        result.stop_reason = str(spent)
    return result
