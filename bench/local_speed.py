"""Speed and basic fitness of the embedded local models.

For each installed local model: prompt and generation tokens/s (llama.cpp's own
counters), calls/min for a short yes/no classification call (max_tokens 8) with the
varying text first (nothing to reuse) and with a shared system prompt first (llama.cpp
reuses the cached prefix), yes/no accuracy on those calls, and how often a
`response_format={"type": "json_object"}` request returns a usable
{"system": ..., "template": ...} object.

    python bench/local_speed.py [--models NAME ...] [--threads N ...] [--repacked] [--no-write]

`--repacked` measures each model twice: with plain weight buffers, and with llama.cpp's
extra buffer types (AMX tiles, repacked layouts), which the provider turns off only on
CPUs with AMX, where they segfault (llama.cpp #20824). Never pass it on such a CPU.

Prints a table and replaces its own section of BENCHMARKS.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is imported

import argparse
import json
import statistics
import time

import litellm
from _common import BENCHMARKS, header, machine, markdown_table, now, write_section
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from prompt_descent.errors import ModelError
from prompt_descent.llm.local import llamacpp, provider
from prompt_descent.llm.local.weights import describe_models, resolve

INSTRUCTIONS = """\
You check reading-comprehension data. You are given a short text and a question.
Decide whether the text itself contains the answer to the question.
Rules:
- Answer "yes" only if a reader could answer the question from the text alone.
- Answer "no" if the text is about the same topic but does not state the answer.
- Answer "no" if the answer would need outside knowledge, a guess, or arithmetic
  on facts that are not in the text.
- Ignore spelling mistakes and the style of the text.
- Do not explain your decision and do not repeat the text.
Reply with exactly one word: yes or no."""

# (text, question, whether the text contains the answer)
CASES: list[tuple[str, str, bool]] = [
    ("The Nile flows north into the Mediterranean Sea.", "Into which sea does the Nile flow?",
     True),
    ("Marie Curie won two Nobel prizes, in physics and chemistry.",
     "In which year was Marie Curie born?", False),
    ("The meeting was moved from Tuesday to Thursday at 3 pm.",
     "On which day is the meeting now?", True),
    ("Our café sells coffee, tea and fresh orange juice.", "How much does a coffee cost?",
     False),
    ("Mount Everest is 8,849 metres tall.", "How tall is Mount Everest?", True),
    ("The library opens early on weekdays.", "At what time does the library open on Monday?",
     False),
    ("Python was created by Guido van Rossum.", "Who created Python?", True),
    ("The train to Lyon was delayed because of snow.", "How long was the delay?", False),
]  # fmt: skip

JSON_REQUESTS = [
    "sentiment classification of product reviews (positive or negative)",
    "extracting the city name from a sentence",
    "answering yes or no: does the text contain the answer to the question",
]


class Result(BaseModel):
    model: str
    threads: int
    weights: str  # "plain", "repacked" (llama.cpp's extra buffer types), or "default"
    load_s: float
    prompt_tps: float
    gen_tps: float
    cold_calls_min: float
    cold_eval_tokens: float
    warm_calls_min: float
    warm_eval_tokens: float
    prompt_tokens: float
    yes_no_correct: int
    json_ok: int
    sample_json: str


def chat(model: str, messages: list[dict[str, str]], **params: object) -> litellm.ModelResponse:
    return litellm.completion(model=model, messages=messages, temperature=0.0, **params)


def measure_prompt_and_generation(model: str) -> tuple[float, float]:
    """Tokens/s of prompt evaluation and of generation, from llama.cpp's counters."""
    before = llamacpp.eval_stats(model)
    for i in range(2):  # a distinct first line each time, so no prefix is reused
        chat(model, [{"role": "user", "content": f"Run {i}.\n{INSTRUCTIONS}"}], max_tokens=1)
    for topic in ("rivers", "mountains"):
        prompt = f"Write two paragraphs about {topic}."
        chat(model, [{"role": "user", "content": prompt}], max_tokens=64)
    after = llamacpp.eval_stats(model)
    prompt_tps = (after.prompt_tokens - before.prompt_tokens) / max(
        after.prompt_seconds - before.prompt_seconds, 1e-9
    )
    gen_tps = (after.generated_tokens - before.generated_tokens) / max(
        after.generation_seconds - before.generation_seconds, 1e-9
    )
    return prompt_tps, gen_tps


def classify_messages(text: str, question: str, shared_prefix: bool) -> list[dict[str, str]]:
    user = f"Question: {question}\nDoes the text contain the answer? Reply yes or no."
    if shared_prefix:
        return [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": f"Text: {text}\n{user}"},
        ]
    # Same tokens, but the varying text comes first: nothing after it can be reused.
    return [
        {"role": "system", "content": f"Text: {text}\n\n{INSTRUCTIONS}"},
        {"role": "user", "content": user},
    ]


def measure_classification(model: str, shared_prefix: bool) -> tuple[float, float, float, int]:
    """(calls/min, prompt tokens evaluated per call, prompt tokens per call, correct)."""
    before = llamacpp.eval_stats(model)
    billed, correct = [], 0
    start = time.perf_counter()
    for text, question, gold in CASES:
        response = chat(model, classify_messages(text, question, shared_prefix), max_tokens=8)
        billed.append(response.usage.prompt_tokens)
        answer = (response.choices[0].message.content or "").strip().lower()
        correct += answer.startswith("yes" if gold else "no")
    elapsed = time.perf_counter() - start
    evaluated = llamacpp.eval_stats(model).prompt_tokens - before.prompt_tokens
    n = len(CASES)
    return 60 * n / elapsed, evaluated / n, statistics.mean(billed), correct


def usable_prompt_json(content: str) -> bool:
    try:
        value = json.loads(content)
    except ValueError:
        return False
    return (
        isinstance(value, dict)
        and all(isinstance(value.get(k), str) and value[k].strip() for k in ("system", "template"))
        and "{input}" in value["template"]
    )


def measure_json(model: str) -> tuple[int, str]:
    """How many prompt-writing requests return usable JSON, and the first reply."""
    ok, first = 0, ""
    for task in JSON_REQUESTS:
        messages = [
            {"role": "system", "content": "You write prompts for language models. Reply in JSON."},
            {
                "role": "user",
                "content": f"Write a prompt for {task}. Return a JSON object with two string "
                'keys: "system" (the system prompt) and "template" (the user message, which '
                "must contain the placeholder {input}).",
            },
        ]
        reply = chat(model, messages, max_tokens=160, response_format={"type": "json_object"})
        content = reply.choices[0].message.content or ""
        ok += usable_prompt_json(content)
        first = first or content
    return ok, first


def bench_model(model: str, weights: str) -> Result:
    start = time.perf_counter()
    llamacpp.eval_stats(model)  # joins/verifies the weights and loads the model
    load_s = time.perf_counter() - start
    chat(model, [{"role": "user", "content": "Hello."}], max_tokens=4)  # warm-up
    prompt_tps, gen_tps = measure_prompt_and_generation(model)
    cold_cpm, cold_eval, prompt_tokens, _ = measure_classification(model, shared_prefix=False)
    warm_cpm, warm_eval, _, correct = measure_classification(model, shared_prefix=True)
    json_ok, sample = measure_json(model)
    llamacpp.close_all()
    return Result(
        model=model,
        threads=llamacpp.n_threads(),
        weights=weights,
        load_s=load_s,
        prompt_tps=prompt_tps,
        gen_tps=gen_tps,
        cold_calls_min=cold_cpm,
        cold_eval_tokens=cold_eval,
        warm_calls_min=warm_cpm,
        warm_eval_tokens=warm_eval,
        prompt_tokens=prompt_tokens,
        yes_no_correct=correct,
        json_ok=json_ok,
        sample_json=" ".join(sample.split()),
    )


HEADERS = [
    "model", "threads", "weights", "load s", "prompt tok/s", "gen tok/s",
    "calls/min, no shared prefix", "calls/min, shared prefix",
    "prompt tok evaluated / call (no / shared)", "yes/no correct", "usable JSON",
]  # fmt: skip


def row(r: Result) -> list[str]:
    return [
        r.model,
        str(r.threads),
        r.weights,
        f"{r.load_s:.1f}",
        f"{r.prompt_tps:.0f}",
        f"{r.gen_tps:.1f}",
        f"{r.cold_calls_min:.1f}",
        f"{r.warm_calls_min:.1f}",
        f"{r.cold_eval_tokens:.0f} / {r.warm_eval_tokens:.0f} of {r.prompt_tokens:.0f}",
        f"{r.yes_no_correct}/{len(CASES)}",
        f"{r.json_ok}/{len(JSON_REQUESTS)}",
    ]


def markdown(results: list[Result], machine_line: str, started: str) -> str:
    first: dict[str, Result] = {}
    for r in results:
        first.setdefault(r.model, r)
    machine_line += f"; llama-cpp-python {_llama_version()}, n_ctx {llamacpp.n_ctx()}"
    lines = [
        header("Local models: speed (bench/local_speed.py)", machine_line, started).rstrip("\n"),
        f"- classification call: ~{results[0].prompt_tokens:.0f} prompt tokens, max_tokens 8, "
        f"{len(CASES)} calls per column; usable JSON = parses, non-empty string keys "
        '"system" and "template", template contains {input}',
        "- llama.cpp threads wait for each other at every step: when other processes keep the "
        "CPUs busy, fewer threads can be much faster (set PROMPT_DESCENT_N_THREADS)",
        "",
        markdown_table(HEADERS, [row(r) for r in results]),
        "",
        "First JSON reply per model:",
        "",
        *(f"- `{r.model}`: `{r.sample_json[:300]}`" for r in first.values()),
    ]
    return "\n".join(lines) + "\n"


def _llama_version() -> str:
    import llama_cpp

    return llama_cpp.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="local model names (default: all installed)")
    parser.add_argument(
        "--threads",
        nargs="*",
        type=int,
        help="llama.cpp thread counts to compare (default: the provider default)",
    )
    parser.add_argument(
        "--repacked",
        action="store_true",
        help="also measure with llama.cpp's extra buffer types (not on CPUs with AMX)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    provider.register()
    models = args.models or [m.name for m in describe_models() if m.installed]
    for model in models:  # one line before any measuring, not a traceback halfway through
        try:
            resolve(model)
        except ModelError as exc:
            parser.error(f"--models: {exc}")
    console = Console(width=200)
    started, machine_line = now(), machine()  # before our own load counts in the load average
    results = []
    for threads in args.threads or [llamacpp.n_threads()]:
        os.environ["PROMPT_DESCENT_N_THREADS"] = str(threads)  # read when a model loads
        for model in models:
            name = model if model.startswith("local/") else f"local/{model}"
            for weights in ("plain", "repacked") if args.repacked else ("default",):
                console.print(f"benchmarking {model} with {threads} threads, {weights} weights")
                if weights != "default":  # read when a model loads
                    extra = "off" if weights == "plain" else "on"
                    os.environ["PROMPT_DESCENT_EXTRA_BUFFERS"] = extra
                results.append(bench_model(name, weights))
    table = Table(*HEADERS, title="local model speed")
    for r in results:
        table.add_row(*row(r))
    console.print(table)
    for r in results:
        console.print(f"{r.model} JSON: {r.sample_json[:200]}")
    machine_line += "; load average after the run " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    if not args.no_write and results:
        write_section("local_speed", markdown(results, machine_line, started))
        console.print(f"updated {BENCHMARKS}")


if __name__ == "__main__":
    main()
