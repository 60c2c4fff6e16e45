"""Turns what the steps returned into rows: the flow calls it after every step.

The rows are written behind the run, on a worker thread, so a step never waits for
DuckDB: one write at a time, in order, and whatever was recorded while a write ran
goes into the next one (one transaction, however many steps). `flush()` waits for
all of it; the flow awaits it before it reads the store back. Every paid call is
in the run's journal before it is recorded here, so rows a crash loses are rebuilt
by a resume without paying again.
"""

from __future__ import annotations

import asyncio

from prompt_descent.core.config import Example, Prompt, SplitScore
from prompt_descent.core.results import (
    CallRecord,
    Candidate,
    Decision,
    Feedback,
    IterationRecord,
    Usage,
    Validation,
)
from prompt_descent.llm.gateway import Gateway
from prompt_descent.storage.runs import StepRows
from prompt_descent.storage.store import Store


class RunWriter:
    def __init__(self, store: Store, gateway: Gateway, run_id: str) -> None:
        self.store = store
        self.gateway = gateway
        self.run_id = run_id
        self._pending: list[StepRows] = []
        self._writing: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None

    def _record(self, rows: StepRows) -> None:
        self._raise_failure()
        self._pending.append(rows)
        if self._writing is None:
            self._write_pending()

    def _write_pending(self) -> None:
        steps, self._pending = self._pending, []
        loop = asyncio.get_running_loop()
        self._writing = loop.run_in_executor(None, self.store.save_steps, self.run_id, steps)
        self._writing.add_done_callback(self._written)

    def _written(self, writing: asyncio.Future[None]) -> None:
        self._writing = None
        if writing.exception() is not None:
            self._failure = writing.exception()
        elif self._pending:
            self._write_pending()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"writing run {self.run_id} to {self.store.path} failed") from (
                self._failure
            )

    async def flush(self) -> None:
        """Wait until every row recorded so far is in the store; a failed write raises here."""
        while self._writing is not None or (self._pending and self._failure is None):
            if self._writing is None:
                self._write_pending()
            await asyncio.wait([self._writing])
        self._raise_failure()

    def evaluation(self, prompt: Prompt, split: str, scores: SplitScore, label: str) -> None:
        self._record(
            StepRows(
                prompts=[prompt],
                calls=self.gateway.drain(),
                predictions=[(prompt.id, split, scores.predictions)],
                evaluations=[(prompt.id, split, scores.score, len(scores.predictions), label)],
            )
        )

    def skipped(self, step: int, batch: list[Example], current: Prompt, score: float) -> None:
        self._record(
            StepRows(
                prompts=[current],
                calls=self.gateway.drain(),
                iteration=IterationRecord(
                    step=step,
                    proposal=0,
                    batch_ids=[e.id for e in batch],
                    current_prompt=current.id,
                    candidate_prompt=None,
                    batch_before=score,
                    batch_after=None,
                    val_before=None,
                    val_after=None,
                    val_examples_scored=0,
                    accepted=False,
                    reason="batch already perfect: nothing to learn",
                    llm_calls=0,
                    tokens=0,
                    cost_usd=0.0,
                    seconds=0.0,
                ),
            )
        )

    def proposal(
        self,
        step: int,
        proposal: int,
        batch: list[Example],
        current: Prompt,
        feedback: Feedback | None,
        candidate: Candidate,
        validation: Validation,
        decision: Decision,
        spent: Usage,
        seconds: float,
    ) -> IterationRecord:
        prompts = [current] + ([candidate.proposed] if candidate.proposed else [])
        predictions = [
            (candidate.prompt.id, split, scores.predictions)
            for split, scores in (("train", validation.batch), ("val", validation.val))
            if candidate.prompt is not None and scores is not None
        ]
        row = IterationRecord(
            step=step,
            proposal=proposal,
            batch_ids=[e.id for e in batch],
            current_prompt=current.id,
            candidate_prompt=candidate.proposed.id if candidate.proposed else None,
            batch_before=validation.batch_before,
            batch_after=validation.batch_after,
            val_before=validation.val_before,
            val_after=validation.val_after,
            val_examples_scored=validation.val_examples_scored,
            accepted=decision.accepted,
            reason=decision.reason,
            llm_calls=spent.calls,
            tokens=spent.tokens,
            cost_usd=spent.cost_usd,
            seconds=seconds,
        )
        self._record(
            StepRows(
                prompts=prompts,
                calls=self.gateway.drain(),
                predictions=predictions,
                # one gradient per step, given with the proposal that paid for it
                gradient=(step, proposal, current.id, feedback.text) if feedback else None,
                iteration=row,
            )
        )
        return row

    def calls(self, calls: list[CallRecord]) -> None:
        """Calls outside any step: a journal being replayed, or the calls of an unfinished step."""
        self._record(StepRows(calls=calls))
