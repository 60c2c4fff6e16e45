"""What the steps return and the store keeps: LLM calls, iterations, run summaries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prompt_descent.core.config import ModelSettings, Prompt, SplitScore


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CallRecord(Record):
    """One LLM call: what was asked, what came back, what it cost.

    `key` is the call's identity (model, messages, params), shared by repeats of the
    same call; `call_id` names this one attempt, so replaying a journal is idempotent.
    """

    call_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    key: str
    role: str
    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    response: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Usage(Record):
    """Calls paid for (their tokens and cost), and the calls the cache served for free."""

    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    cached_calls: int = 0

    def add(self, call: CallRecord) -> None:
        if call.cached:
            self.cached_calls += 1
            return
        self.calls += 1
        self.tokens += call.tokens
        self.cost_usd += call.cost_usd

    def minus(self, earlier: Usage) -> Usage:
        return Usage(
            calls=self.calls - earlier.calls,
            tokens=self.tokens - earlier.tokens,
            cost_usd=self.cost_usd - earlier.cost_usd,
            cached_calls=self.cached_calls - earlier.cached_calls,
        )


class Feedback(Record):
    """The text gradient for one proposal."""

    prompt_id: str
    text: str
    failures: int


class Candidate(Record):
    """What the apply step proposed, or why it proposed nothing usable."""

    prompt: Prompt | None
    rejected_because: str | None = None
    raw: str = ""
    repeats: Prompt | None = None  # the current or an earlier prompt it proposed again

    @property
    def proposed(self) -> Prompt | None:
        """The prompt the reply proposed, usable or not yet scored: for the record."""
        return self.prompt or self.repeats


class Attempt(Record):
    """A prompt already tried, shown to the apply step with what is known of how it did.

    A candidate rejected early was never fully scored: its outcome is the reason, not a score.
    """

    prompt: Prompt
    outcome: str  # "val 0.625", or "rejected: <the decision's reason>"


class Validation(Record):
    """A candidate scored against the current prompt: the batch first, then val."""

    batch_before: float
    batch_after: float | None = None
    val_before: float
    val_after: float | None = None
    val_examples_scored: int = 0
    batch: SplitScore | None = None
    val: SplitScore | None = None
    stopped_because: str | None = None


class Decision(Record):
    accepted: bool
    reason: str


class IterationRecord(Record):
    """One row of the `iterations` table: one proposal and its fate."""

    step: int
    proposal: int
    batch_ids: list[str]
    current_prompt: str
    candidate_prompt: str | None
    batch_before: float | None
    batch_after: float | None
    val_before: float | None
    val_after: float | None
    val_examples_scored: int
    accepted: bool
    reason: str
    llm_calls: int
    tokens: int
    cost_usd: float
    seconds: float


class RunSummary(Record):
    """The outcome of a run; the flow fills it in as the run goes."""

    run_id: str
    name: str
    status: str = "running"
    stop_reason: str | None = None
    baseline_prompt: str
    best_prompt: str
    baseline_val: float | None = None
    baseline_test: float | None = None
    best_val: float | None = None
    best_test: float | None = None
    steps: int = 0
    proposals: int = 0
    accepted: int = 0
    usage: Usage = Usage()
    seconds: float = 0.0
    registered_version: int | None = None
    champion: bool = False  # whether the registered version became the champion
    promotion: str | None = None  # why it did or did not


class RegisteredPrompt(BaseModel):
    """One registry version: the prompt, and the model and sampling settings to run it with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int
    prompt: Prompt
    settings: ModelSettings
    val_score: float | None = None
    test_score: float | None = None
    champion: bool = False
    run_id: str | None = None
    created_at: datetime | None = None


class Promotion(Record):
    """One challenger-vs-champion decision: a row of the `promotions` table."""

    name: str
    champion_version: int | None
    champion_prompt: str
    challenger_prompt: str
    champion_score: float | None
    challenger_score: float | None
    margin: float
    promoted: bool
    promoted_version: int | None = None
    reason: str
    run_id: str
