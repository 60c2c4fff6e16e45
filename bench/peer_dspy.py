"""DSPy's GEPA and MIPROv2 on one bench cell, in DSPy's own venv (made by bench/peers.py).

    python bench/peer_dspy.py JOB.json RESULT.json

JOB holds the method (gepa, mipro, mipro-demos), the seed prompt, the train and val
examples, the two model endpoints and the call budget; RESULT gets the optimized
instruction and demonstrations, which the harness scores on the test split with the
same scorer as every other method. The program is one `dspy.Predict(input -> answer)`
whose instructions start as the seed system prompt. In the reasoning regime that prompt
asks for reasoning, then 'Answer: X'; the `answer` field holds all of it (as the plain
chat output the harness scores does), and the metric reads the answer from its end.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")

import json
import sys
from pathlib import Path

import dspy
from peer_metric import score

# DSPy's ChatAdapter wraps every answer in field markers ("[[ ## answer ## ]]" ...): the
# task model gets this many tokens on top of the cap, or no answer would parse.
ADAPTER_TOKENS = 24


def language_model(endpoint: dict, api_key: str, extra_tokens: int = 0) -> dspy.LM:
    # engine="litellm": DSPy 3.4.1's default engine did not pass max_tokens to this server
    return dspy.LM(
        endpoint["model"],
        api_base=endpoint["api_base"],
        api_key=api_key,
        max_tokens=endpoint["max_tokens"] + extra_tokens,
        temperature=endpoint["temperature"],
        cache=False,
        num_retries=2,
        engine="litellm",
    )


def examples(rows: list[dict]) -> list[dspy.Example]:
    return [dspy.Example(input=r["input"], answer=r["target"]).with_inputs("input") for r in rows]


def optimize(job: dict) -> dspy.Predict:
    task_lm = language_model(job["task"], job["api_key"], ADAPTER_TOKENS)
    optimizer_lm = language_model(job["optimizer"], job["api_key"])
    dspy.configure(lm=task_lm)
    program = dspy.Predict(dspy.Signature("input: str -> answer: str", job["system"]))
    train, val = examples(job["train"]), examples(job["val"])
    metric_spec, budget = job["metric"], job["budget"]

    def metric(gold, prediction, trace=None, pred_name=None, pred_trace=None):
        got = score(metric_spec, prediction.answer or "", gold.answer)
        if pred_name is None:
            return got
        verdict = "right" if got else "wrong"
        feedback = f"The answer {prediction.answer!r} is {verdict}; the expected answer is "
        return dspy.Prediction(score=got, feedback=feedback + repr(gold.answer))

    if job["method"] == "gepa":
        optimizer = dspy.GEPA(
            metric=metric,
            max_metric_calls=budget - budget // 8,  # the rest: reflection calls
            reflection_lm=optimizer_lm,
            seed=job["seed"],
            num_threads=1,
            track_stats=False,
        )
        return optimizer.compile(program, trainset=train, valset=val)
    demos = job["demos"] if job["method"] == "mipro-demos" else 0
    minibatch = min(len(val), 8)
    optimizer = dspy.MIPROv2(
        metric=metric,
        prompt_model=optimizer_lm,
        task_model=task_lm,
        auto=None,
        num_candidates=4,
        max_bootstrapped_demos=demos // 2,
        max_labeled_demos=demos - demos // 2,
        seed=job["seed"],
        num_threads=1,
        verbose=False,
        track_stats=False,
    )
    # proposing takes ~10 calls and a full val evaluation len(val); each trial one minibatch
    trials = max(2, (budget - 10 - 2 * len(val)) // minibatch)
    return optimizer.compile(
        program,
        trainset=train,
        valset=val,
        num_trials=trials,
        minibatch=len(val) > minibatch,
        minibatch_size=minibatch,
    )


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    optimized = optimize(job)
    demos = [{"input": d["input"], "output": d["answer"]} for d in optimized.demos]
    result = {"system": optimized.signature.instructions, "demos": demos}
    Path(sys.argv[2]).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
