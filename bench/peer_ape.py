"""Ape's own TextGradientTrainer (ape-core) on one bench cell, in Ape's venv (made by
bench/peers.py).

    python bench/peer_ape.py JOB.json RESULT.json

The trainer is Ape's, unchanged; what this script supplies is what Ape asks its user
for: a generator (the task model through litellm), a metric, and the endpoints. Three
settings of Ape's own meta-prompts are overridden, each because it cannot work here:
their models (hard-coded claude-3-5-sonnet / gpt-4o: the bench's optimizer model
instead), and the applier's `response_format` `json_schema`, which llama-cpp-python
0.3.36 rejects (`json_object` with the same schema instead). Ape has no call budget:
it makes the calls one pass over the train split takes, and the server counts them.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")

import asyncio
import json
import sys
from pathlib import Path

import litellm
from ape.common import BaseGenerator, BaseMetric, MetricResult, Prompt
from ape.common.global_metric import AverageGlobalMetric
from ape.core.trainer import TextGradientTrainer
from peer_metric import score


class TaskModel(BaseGenerator):
    def __init__(self, endpoint: dict, api_key: str) -> None:
        self.endpoint, self.api_key = endpoint, api_key

    async def generate(self, prompt: Prompt, inputs: dict | None = None) -> str:
        response = await litellm.acompletion(
            model=self.endpoint["model"],
            api_base=self.endpoint["api_base"],
            api_key=self.api_key,
            messages=prompt.format(**(inputs or {})).messages,
            max_tokens=self.endpoint["max_tokens"],
            temperature=self.endpoint["temperature"],
        )
        return response.choices[0].message.content or ""


class TaskMetric(BaseMetric):
    def __init__(self, spec: dict) -> None:
        self.spec = spec

    async def compute(self, dataset_item: dict, pred: object) -> MetricResult:
        return MetricResult(score=score(self.spec, str(pred or ""), dataset_item["outputs"]))


def metric_description(spec: dict) -> str:
    answer = spec.get("answer") or {"take": "whole"}
    where = {
        "last_label": f"the last of {', '.join(answer.get('labels', []))} in the output",
        "last_number": "the last number in the output",
    }.get(answer["take"], "the output")
    return f"{spec['name']} of {where} against the expected answer"


def trainer_for(job: dict) -> TextGradientTrainer:
    trainer = TextGradientTrainer(
        generator=TaskModel(job["task"], job["api_key"]),
        metric=TaskMetric(job["metric"]),
        global_metric=AverageGlobalMetric(),
        batch_size=job["batch_size"],
        random_seed=job["seed"],
        task_description=job["system"],
        metric_description=metric_description(job["metric"]),
    )
    optimizer = job["optimizer"]
    for meta_prompt in (
        trainer.text_gradient_generator_prompt,
        trainer.text_gradient_applier_prompt,
    ):
        meta_prompt.model = optimizer["model"]
    applier = trainer.text_gradient_applier_prompt
    if applier.response_format and applier.response_format.get("type") == "json_schema":
        schema = applier.response_format["json_schema"]["schema"]
        applier.response_format = {"type": "json_object", "schema": schema}
    return trainer


def seed_prompt(job: dict) -> Prompt:
    return Prompt(
        messages=[
            {"role": "system", "content": job["system"]},
            {"role": "user", "content": job["template"]},
        ],
        model=job["task"]["model"],
        inputs={"input": "the task input"},
        outputs={"answer": "the answer"},
    )


def items(rows: list[dict]) -> list[dict]:
    return [{"inputs": {"input": r["input"]}, "outputs": r["target"]} for r in rows]


async def optimize(job: dict) -> Prompt:
    # Ape's meta-prompts reach the optimizer model through litellm's environment defaults
    os.environ["OPENAI_API_BASE"] = job["optimizer"]["api_base"]
    os.environ["OPENAI_API_KEY"] = job["api_key"]
    best, _ = await trainer_for(job).train(seed_prompt(job), items(job["train"]), items(job["val"]))
    return best


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    best = asyncio.run(optimize(job))
    by_role = {m["role"]: m["content"] for m in best.messages}
    result = {"system": by_role.get("system", ""), "template": by_role.get("user", "{input}")}
    Path(sys.argv[2]).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
