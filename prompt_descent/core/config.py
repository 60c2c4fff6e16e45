"""The run configuration and the records that flow between the steps.

Everything a user writes (the YAML run config) and everything a step takes or
returns is a pydantic model, so that bad input fails at the edge with a message
naming the field, and so that Prefect can hash step inputs for its cache.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import string
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

DEFAULT_MODEL = "local/qwen2.5-coder-1.5b-instruct"


def default_model() -> str:
    """The model every role uses unless the config names one: PROMPT_DESCENT_MODEL or local."""
    return os.environ.get("PROMPT_DESCENT_MODEL") or DEFAULT_MODEL


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSettings(Strict):
    """One role's model and the sampling settings it is called with."""

    model: str = Field(default_factory=default_model, min_length=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    max_tokens: int = Field(256, ge=1, le=32768)
    api_base: str | None = Field(
        None, description="Server URL; ${VAR} parts are read from the environment at call time."
    )
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key (never the key)."
    )

    @field_validator("api_base")
    @classmethod
    def _no_credentials_in_url(cls, value: str | None) -> str | None:
        # Config is stored, exported and shown in the Prefect UI: secrets stay in the environment.
        if value and "${" not in value and _CREDENTIALS_IN_URL.search(value):
            raise ValueError(
                "api_base holds credentials; put them in an environment variable and write "
                "api_base: ${YOUR_VAR}"
            )
        return value

    def sampling(self) -> dict[str, float | int]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "frequency_penalty": self.frequency_penalty,
            "max_tokens": self.max_tokens,
        }


class Models(Strict):
    """The model for each role. Roles left out use `task`'s model with role defaults."""

    # factories, so that PROMPT_DESCENT_MODEL is read when a config is made, not at import
    task: ModelSettings = Field(default_factory=lambda: ModelSettings(max_tokens=64))
    gradient: ModelSettings = Field(
        default_factory=lambda: ModelSettings(max_tokens=384, temperature=0.7)
    )
    apply: ModelSettings = Field(
        default_factory=lambda: ModelSettings(max_tokens=512, temperature=0.7)
    )
    judge: ModelSettings = Field(default_factory=lambda: ModelSettings(max_tokens=16))

    def roles(self) -> list[ModelSettings]:
        return [self.task, self.gradient, self.apply, self.judge]


_CREDENTIALS_IN_URL = re.compile(r"://[^/@\s]+@|[?&](api[-_]?key|key|token|secret)=", re.I)
_PLACEHOLDER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def placeholders(text: str) -> set[str]:
    """The `{name}` fields of a str.format template."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError:
        return set()


def template_error(text: str) -> str | None:
    """Why `text` cannot be used as a str.format template, or None if it can."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        return f"{exc} (write literal braces as {{{{ and }}}})"
    for name in names:
        if not _PLACEHOLDER.match(name):
            return f"placeholder {{{name}}} is not a plain field name"
    return None


class Demo(Strict):
    """A worked example the prompt shows before the input: an earlier user turn (the
    template filled with `inputs`) and the assistant's answer to it."""

    inputs: dict[str, str]
    output: str


class Prompt(Strict):
    """The thing being optimized: a system prompt, the user-message template, and the
    demonstrations shown before the input, in order."""

    system: str
    template: str = "{input}"
    demos: list[Demo] = Field(default_factory=list)

    @field_validator("template")
    @classmethod
    def _template_is_formattable(cls, value: str) -> str:
        problem = template_error(value)
        if problem:
            raise ValueError(problem)
        if not placeholders(value):
            raise ValueError("the template has no placeholder such as {input}")
        return value

    @field_validator("demos")
    @classmethod
    def _demos_fill_the_template(cls, demos: list[Demo], info: ValidationInfo) -> list[Demo]:
        template = info.data.get("template")  # absent when it failed its own check
        for number, demo in enumerate(demos if template else []):
            missing = placeholders(template) - demo.inputs.keys()
            if missing:
                names = ", ".join(f"{{{name}}}" for name in sorted(missing))
                raise ValueError(f"demos[{number}] has no input for {names}")
        return demos

    @property
    def id(self) -> str:
        """Content address: the same text and demonstrations always have the same id."""
        content = f"{self.system}\x00{self.template}"
        if self.demos:  # a prompt without demonstrations keeps the id it always had
            content += "\x00" + self.demos_json()
        return hashlib.sha256(content.encode()).hexdigest()[:16]

    def demos_json(self) -> str:
        """The demonstrations as JSON, in one key order: for the id and the store."""
        shown = [demo.model_dump() for demo in self.demos]
        return json.dumps(shown, sort_keys=True, ensure_ascii=False)

    def placeholders(self) -> set[str]:
        return placeholders(self.template)

    def with_demos(self, demos: list[Demo]) -> Prompt:
        return Prompt(system=self.system, template=self.template, demos=demos)

    def fill(self, inputs: dict[str, str]) -> str:
        """The user turn for `inputs`: the template filled."""
        return self.template.format(**inputs)

    def demos_text(self) -> str:
        """Each demonstration as its user turn and the answer shown after it."""
        return "\n\n".join(f"{self.fill(demo.inputs)}\n=> {demo.output}" for demo in self.demos)

    def _text(self) -> str:
        shown = f"\n---- demos\n{self.demos_text()}" if self.demos else ""
        return f"{self.system}\n---- template\n{self.template}{shown}"

    def diff_lines(self, after: Prompt) -> list[str]:
        """A unified diff from this prompt to `after`: system prompt, template, demos."""
        return list(
            difflib.unified_diff(
                self._text().splitlines(),
                after._text().splitlines(),
                fromfile=self.id,
                tofile=after.id,
                lineterm="",
            )
        )

    def render(self, inputs: dict[str, str]) -> list[dict[str, str]]:
        """Chat messages for one example: the system prompt first so its prefix is cached,
        then each demonstration as a user turn and its answer, then the input."""
        turns = [{"role": "system", "content": self.system}]
        for demo in self.demos:
            turns.append({"role": "user", "content": self.fill(demo.inputs)})
            turns.append({"role": "assistant", "content": demo.output})
        turns.append({"role": "user", "content": self.fill(inputs)})
        return turns


class DatasetSpec(Strict):
    """Where the examples come from and which fields are which."""

    path: str | None = None
    query: str | None = Field(None, description="DuckDB SQL returning the rows.")
    database: str | None = Field(None, description="DuckDB file the query runs against.")
    format: Literal["auto", "jsonl", "csv", "parquet", "bbh"] = "auto"
    fields: dict[str, str] = Field(
        default_factory=lambda: {"input": "input"},
        description="Template placeholder -> dataset column.",
    )
    target: str | None = "target"
    id: str | None = Field(None, description="Column holding a unique example id.")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.path is None) == (self.query is None):
            raise ValueError("give exactly one of 'path' or 'query'")
        return self


class Splits(Strict):
    train: int = Field(20, ge=1)
    val: int = Field(20, ge=1)
    test: int = Field(0, ge=0)


TARGET_METRICS = frozenset({"exact_match", "contains", "last_number", "json_field"})


class AnswerSpec(Strict):
    """Where the answer is in a longer output, for a prompt that has the model reason first.

    The metric then compares only that answer with the target; the whole output, reasoning
    included, is what the gradient model reads.
    """

    take: Literal["last_label", "last_number", "regex"] = Field(
        description="last_label: the label of `labels` written last; last_number: the last "
        "number; regex: the first group of the last match of `pattern`."
    )
    labels: list[str] = Field(
        default_factory=list, description="For 'last_label': the answer space, e.g. [yes, no]."
    )
    pattern: str | None = Field(None, description="For 'regex': e.g. 'Answer: (\\w+)'.")

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_are_text(cls, value: object) -> object:
        if isinstance(value, list) and any(isinstance(label, bool) for label in value):
            raise ValueError(
                "YAML reads an unquoted yes/no/true/false as a boolean; quote the labels, "
                'e.g. labels: ["yes", "no"]'
            )
        return value

    @property
    def rule(self) -> str:
        """Where the answer is read, in words, for the gradient model."""
        if self.take == "last_label":
            return f"the last of {', '.join(repr(label) for label in self.labels)} written"
        if self.take == "last_number":
            return "the last number written"
        return f"the first group of the last match of the regex `{self.pattern}`"


class MetricSpec(Strict):
    """A built-in metric by name, or a user function as 'module:function'.

    Left unset, it is exact_match when the dataset has targets and llm_judge when not.
    """

    name: str = "exact_match"
    pattern: str | None = Field(None, description="For 'regex': the pattern the output must match.")
    field: str | None = Field(None, description="For 'json_field': the JSON key compared.")
    rubric: str | None = Field(None, description="For 'llm_judge': what a good answer is.")
    answer: AnswerSpec | None = Field(
        None, description="Take the answer from a longer output before comparing it."
    )


class FeedbackSettings(Strict):
    """Feedback mode (no targets): an LLM critique is the gradient, an LLM judge the metric."""

    always_accept: bool = Field(
        False, description="Accept every revision unvalidated, as the original Tiny TextGrad loop."
    )
    clean: bool = Field(True, description="Strip meta-commentary from each revised prompt.")


class RetrySettings(Strict):
    """How a failing LLM call is retried: backoff with full jitter, Retry-After honoured."""

    attempts: int = Field(4, ge=1, le=20)
    base_seconds: float = Field(0.5, ge=0)
    max_wait_seconds: float = Field(30.0, ge=0)
    max_failed_fraction: float = Field(
        0.5, ge=0, le=1, description="A step fails when more of its calls than this fail."
    )


class Budget(Strict):
    max_llm_calls: int | None = Field(None, ge=1)
    max_cost_usd: float | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, ge=1)
    max_seconds: float | None = Field(None, gt=0)
    covers: Literal["run", "optimization"] = Field(
        "run",
        description="run: every call the run makes; optimization: all but scoring the "
        "baseline and the best prompt on the test split (those are still paid and recorded).",
    )


class DaskSettings(Strict):
    """Where prediction fan-outs go with `task_runner: dask`."""

    address: str | None = Field(
        None, description="A running Dask scheduler (tcp://host:8786); none starts a local cluster."
    )
    workers: int = Field(2, ge=1, description="Worker processes of the local cluster.")
    min_calls: int = Field(
        64, ge=1, description="Smaller fan-outs stay in the run's process (a shard is a task run)."
    )


class DemoSettings(Strict):
    """The demonstrations lever: besides its instruction edits, each step proposes one new
    set of demonstrations, validated like an edit (batch, then val)."""

    count: int = Field(
        0, ge=0, le=16, description="Demonstrations per proposed set; 0 turns the lever off."
    )
    source: Literal["bootstrapped", "labeled"] = Field(
        "bootstrapped",
        description="bootstrapped: train examples the current prompt got right, with the "
        "model's own outputs (labeled targets fill the rest); labeled: train targets only.",
    )


class RunConfig(Strict):
    name: str = Field(..., min_length=1)
    model: str | None = Field(None, description="One line to set the model of every role.")
    prompt: Prompt
    dataset: DatasetSpec
    metric: MetricSpec = MetricSpec()
    models: Models = Field(default_factory=Models)
    feedback: FeedbackSettings = FeedbackSettings()
    batch_size: int = Field(4, ge=1)
    max_proposals: int = Field(5, ge=1)
    give_up_after: int = Field(
        2,
        ge=1,
        description="Edits in a row with no usable prompt (identical to the current one, "
        "already tried, a broken template) after which a step gives up its batch: the "
        "gradient gave apply nothing new to write, and the next batch brings a new gradient.",
    )
    race: int = Field(
        1,
        ge=1,
        le=8,
        description="Edits sampled at once from one gradient, scored together on the batch "
        "and validated best first; 1: one edit after another.",
    )
    pool: int = Field(
        1,
        ge=1,
        le=8,
        description="The best prompts kept by val score; each step starts from the one that "
        "has started the fewest steps (core/pool.py); 1: from the last accepted prompt.",
    )
    early_reject_chance: float = Field(
        0.01,
        ge=0.0,
        lt=1.0,
        description="Stop validating a candidate on val once its chance to still reach the "
        "current prompt's score is below this; 0: only once it cannot.",
    )
    val_ties: Literal["accept", "reject"] = Field(
        "accept",
        description="A candidate better on its batch that only ties the current prompt on "
        "val: accept it (it fixed the batch at no cost held out), or reject it (the batch "
        "is the one it was written for, so a tie leaves no held-out evidence for it).",
    )
    val_margin: float = Field(
        0.0,
        ge=0.0,
        le=3.0,
        description="Standard errors of the current prompt's val score (sqrt(n) times the "
        "spread of its per-example scores) a candidate must beat it by on val; 0: reaching "
        "it is enough (val_ties).",
    )
    steps: int | None = Field(None, ge=1, description="Batches to run; default one epoch.")
    epochs: int = Field(1, ge=1)
    seed: int = 0
    splits: Splits = Splits()
    concurrency: int = Field(4, ge=1)
    task_runner: Literal["thread", "dask"] = Field(
        "thread",
        description="thread: predictions fan out on the run's event loop; dask: across the "
        "processes of a Dask cluster (prefect-dask), in shards of uncached calls.",
    )
    dask: DaskSettings = DaskSettings()
    demos: DemoSettings = Field(
        DemoSettings(), description="Demonstrations as a lever: each step may propose a new set."
    )
    right_shown: int = Field(
        0,
        ge=0,
        le=8,
        description="Examples of the batch the current prompt gets right, shown to the "
        "gradient model beside the failures as ones to keep right (metric mode); 0: none.",
    )
    history_size: int = Field(
        4, ge=0, description="Recent attempts (val score or rejection) shown to apply."
    )
    budget: Budget = Budget()
    retry: RetrySettings = RetrySettings()
    rpm_limits: dict[str, int] = Field(
        default_factory=dict,
        description="Provider -> requests per minute, shared by every run on the Prefect server.",
    )
    long_inputs: Literal["reject", "truncate"] = Field(
        "reject", description="An example longer than the task model's context: stop, or cut it."
    )
    store: str = ".prompt_descent/runs.duckdb"
    register_as: str | None = Field(None, description="Registry name; defaults to the run name.")
    promote: Literal["always", "if_better", "never"] = Field(
        "if_better",
        description="When the registered best prompt becomes the champion: if_better = when "
        "the name has none, or it beats the champion held out with the same task model.",
    )
    promote_margin: float = Field(
        0.0, ge=0, le=1, description="if_better: by more than this, on the held-out split."
    )
    source: Path | None = Field(None, exclude=True, description="The YAML file it came from.")

    @model_validator(mode="before")
    @classmethod
    def _model_applies_to_every_role(cls, data: object) -> object:
        if not isinstance(data, dict) or not data.get("model"):
            return data
        roles = data.get("models") or {}
        if not isinstance(roles, dict):
            return data  # field validation reports what is wrong with `models`
        roles = dict(roles)
        for role, field in Models.model_fields.items():
            settings = roles.get(role)
            if isinstance(settings, ModelSettings):
                settings = settings.model_dump(exclude_unset=True)
            if settings is not None and not isinstance(settings, dict):
                continue
            defaults = field.get_default(call_default_factory=True).model_dump(exclude={"model"})
            roles[role] = {**defaults, "model": data["model"], **(settings or {})}
        return {**data, "models": roles}

    @field_validator("dataset")
    @classmethod
    def _template_fields_are_mapped(cls, dataset: DatasetSpec, info: ValidationInfo) -> DatasetSpec:
        prompt = info.data.get("prompt")
        unmapped = prompt.placeholders() - set(dataset.fields) if prompt else set()
        if unmapped:
            names = ", ".join(f"{{{name}}}" for name in sorted(unmapped))
            raise ValueError(
                f"prompt.template uses {names} but dataset.fields maps only "
                f"{sorted(dataset.fields)}; add it to dataset.fields"
            )
        return dataset

    @model_validator(mode="before")
    @classmethod
    def _judge_when_there_are_no_targets(cls, data: object) -> object:
        if not isinstance(data, dict) or "metric" in data:
            return data
        dataset = data.get("dataset")
        target = dataset.get("target", "target") if isinstance(dataset, dict) else "target"
        if isinstance(dataset, DatasetSpec):
            target = dataset.target
        return {**data, "metric": {"name": "llm_judge"}} if target is None else data

    @field_validator("metric")
    @classmethod
    def _metric_has_targets(cls, metric: MetricSpec, info: ValidationInfo) -> MetricSpec:
        dataset = info.data.get("dataset")
        if dataset is not None and dataset.target is None and metric.name in TARGET_METRICS:
            raise ValueError(
                f"metric '{metric.name}' compares with targets but dataset.target is not set; "
                "set dataset.target, or use llm_judge (the default without targets)"
            )
        return metric

    @property
    def mode(self) -> Literal["metric", "feedback"]:
        """Metric mode learns from targets; feedback mode from an LLM critique of the outputs."""
        return "metric" if self.dataset.target else "feedback"

    @property
    def registry_name(self) -> str:
        return self.register_as or self.name


class Example(Strict):
    id: str
    inputs: dict[str, str]
    target: str | None = None
    source: str | None = Field(None, description="Where it was read: 'file:line' or 'file row N'.")


class Prediction(Strict):
    """One example's output and score. A failed example is a score of 0 with its error."""

    example_id: str
    output: str
    score: float = 0.0
    error: str | None = None
    truncated: bool = False  # the output reached the task model's max_tokens: cut off


class SplitScore(Strict):
    """A prompt's predictions on a set of examples, and their mean score."""

    prompt_id: str
    predictions: list[Prediction]

    @property
    def score(self) -> float:
        if not self.predictions:
            return 0.0
        return sum(p.score for p in self.predictions) / len(self.predictions)
