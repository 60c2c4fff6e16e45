"""Steps 1 and 2 together: the task model answers each example, the metric scores it.

Every place that asks "how good is this prompt on these examples" asks a Scorer: the
trainer's evaluations, the evaluate flow, and validate's races.
"""

from __future__ import annotations

from prefect.utilities.annotations import quote
from pydantic import BaseModel, ConfigDict

from prompt_descent.core.config import Example, MetricSpec, ModelSettings, Prompt, SplitScore
from tasks.metric import metric
from tasks.options import named
from tasks.predict import predict


class Scorer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: MetricSpec
    task_model: ModelSettings
    judge: ModelSettings  # for the llm_judge metric
    concurrency: int

    async def score(self, prompt: Prompt, examples: list[Example], label: str = "") -> SplitScore:
        """As the task runs `predict <label>` and `metric <label>`."""
        # quote(): Prefect would otherwise walk every example and prediction looking for
        # futures (tens of ms per task run); they still key the cache.
        outputs = await named(predict, f"predict {label}")(
            prompt, quote(examples), self.task_model, self.concurrency
        )
        return await named(metric, f"metric {label}")(
            self.metric,
            prompt.id,
            quote(examples),
            quote(outputs),
            self.judge,
            self.concurrency,
        )

    async def score_within_step(self, prompt: Prompt, examples: list[Example]) -> SplitScore:
        """The same, inside another step's task run (no task runs of its own)."""
        outputs = await predict.fn(prompt, examples, self.task_model, self.concurrency)
        return await metric.fn(
            self.metric, prompt.id, examples, outputs, self.judge, self.concurrency
        )
