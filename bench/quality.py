"""Quality on BIG-Bench Hard with the embedded local model, at one LLM-call budget.

For each task and seed: the baseline prompt, prompt-descent (flows.optimize), the
Ape-style loop and the Tiny TextGrad loop each get the same call budget for
optimizing; then the harness scores every final prompt on the test split (those
test calls are not counted against the budget; a prompt already scored is not
scored twice). Each finished cell is written to bench/results/quality.json at once
and skipped when the script runs again, so an interrupted run resumes.

    PROMPT_DESCENT_N_THREADS=1 python bench/quality.py [--seeds 0 1 2] [--train 24 --val 24
        --test 60 --budget 64] [--table-only]

The splits are smaller than TextGrad's 50/100/100 (2 shared cores); the table says so.
The sizes and budget are kept in the results file: a rerun with other ones must start
a new file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import (
    RESULTS,
    Caller,
    bbh_task,
    header,
    machine,
    markdown_table,
    mean,
    now,
    save_json,
    score,
    write_section,
)
from ape_loop import ape_loop
from tiny_textgrad_loop import tiny_textgrad_loop

from prompt_descent.core.config import DatasetSpec, Models, ModelSettings, Prompt, RunConfig, Splits
from prompt_descent.core.datasets import load_examples, split_examples
from tasks.metric import BUILT_IN

# The shared data directory beside the project root (../shared/data/bbh), on any clone.
BBH = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "bbh").resolve()
MODEL = "local/qwen2.5-coder-1.5b-instruct"
TEXTGRAD_SIZE = {"train": 50, "val": 100, "test": 100}
TASKS = {
    "sports_understanding": {
        "metric": "exact_match",
        "prompt": Prompt(
            system="Decide whether the sentence is plausible. Answer yes or no.",
            template="{input}",
        ),
        "max_tokens": 3,
    },
    "object_counting": {
        "metric": "last_number",
        "prompt": Prompt(
            system="Count the objects the question asks about. Answer with a number only.",
            template="{input}",
        ),
        "max_tokens": 4,
    },
    "boolean_expressions": {
        "metric": "exact_match",
        "prompt": Prompt(
            system="Evaluate the boolean expression. Answer True or False.",
            template="{input}",
        ),
        "max_tokens": 3,
    },
    "formal_fallacies": {
        "metric": "exact_match",
        "prompt": Prompt(
            system="Decide whether the argument is deductively valid. Answer valid or invalid.",
            template="{input}",
        ),
        "max_tokens": 3,
    },
}
METHODS = ["baseline", "prompt-descent", "ape-style", "tiny-textgrad"]
RESULT_FILE = RESULTS / "quality.json"


def models_for(task: str) -> Models:
    return Models(
        task=ModelSettings(model=MODEL, max_tokens=TASKS[task]["max_tokens"]),
        gradient=ModelSettings(model=MODEL, max_tokens=96, temperature=0.7),
        apply=ModelSettings(model=MODEL, max_tokens=128, temperature=0.7),
        judge=ModelSettings(model=MODEL, max_tokens=4),
    )


def load_results() -> dict:
    if RESULT_FILE.exists():
        return json.loads(RESULT_FILE.read_text())
    return {"cells": {}, "test_scores": {}}


def dataset(task: str) -> DatasetSpec:
    return DatasetSpec(path=str(bbh_task(BBH, task)))


async def run_prompt_descent(
    task: str, seed: int, workdir: Path, size: dict[str, int], budget: int
) -> tuple[Prompt, dict, str]:
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from flows.optimize import optimize_prompt
    from prompt_descent.storage.store import Store

    spec = TASKS[task]
    models = models_for(task)
    config = RunConfig(
        name=f"quality-{task}-{seed}",
        prompt=spec["prompt"],
        dataset=dataset(task),
        metric={"name": spec["metric"]},
        models=models,
        batch_size=4,
        max_proposals=5,
        epochs=1,
        seed=seed,
        splits={"train": size["train"], "val": size["val"], "test": 0},
        concurrency=1,
        budget={"max_llm_calls": budget},
        store=str(workdir / "runs.duckdb"),
    )
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: workdir / "results"}):
        summary = await optimize_prompt(config, register_best=False)
    store = Store(config.store)
    best = store.prompt(summary.best_prompt) or spec["prompt"]
    roles = store.query(
        "SELECT role, count(*) AS n FROM llm_calls WHERE run_id = ? GROUP BY role",
        [summary.run_id],
    )
    calls = {r["role"]: r["n"] for r in roles}
    detail = f"{summary.proposals} proposals, {summary.accepted} accepted"
    if summary.stop_reason:
        detail += f"; {summary.stop_reason}"
    return best, calls, detail


async def run_cell(
    task: str, seed: int, method: str, splits, workdir: Path, size: dict[str, int], budget: int
):
    spec = TASKS[task]
    metric = BUILT_IN[spec["metric"]]
    models = models_for(task)
    if method == "baseline":
        return spec["prompt"], {}, ""
    if method == "prompt-descent":
        return await run_prompt_descent(task, seed, workdir, size, budget)
    caller = Caller(budget=budget)
    if method == "ape-style":
        result = await ape_loop(spec["prompt"], splits.train, metric, models, caller, seed=seed)
    else:
        result = await tiny_textgrad_loop(spec["prompt"], splits.train, models, caller, seed=seed)
    accepted = sum(1 for d in result.decisions if d[2])
    proposals = sum(1 for d in result.decisions if d[1] > 0)
    detail = f"{proposals} proposals, {accepted} accepted"
    if result.stop_reason:
        detail += f"; {result.stop_reason}"
    return result.best, dict(result.caller.calls), detail


async def test_score(results: dict, task: str, seed: int, prompt: Prompt, test) -> float:
    key = f"{task}|{seed}|{prompt.id}"
    if key not in results["test_scores"]:
        spec = TASKS[task]
        scored = await score(
            Caller(), "test", prompt, test, models_for(task).task, BUILT_IN[spec["metric"]], 1
        )
        results["test_scores"][key] = mean([s for _, _, s in scored])
    return results["test_scores"][key]


async def run_all(seeds: list[int]) -> None:
    results = load_results()
    size, budget = results["size"], results["budget"]
    for seed in seeds:
        for task in TASKS:
            splits = split_examples(load_examples(dataset(task)), Splits(**size), seed)
            for method in METHODS:
                key = f"{task}|{seed}|{method}"
                if key in results["cells"]:
                    continue
                started = time.monotonic()
                with tempfile.TemporaryDirectory(prefix="pd-quality-") as tmp:
                    best, calls, detail = await run_cell(
                        task, seed, method, splits, Path(tmp), size, budget
                    )
                seconds = time.monotonic() - started
                accuracy = await test_score(results, task, seed, best, splits.test)
                results["cells"][key] = {
                    "task": task,
                    "seed": seed,
                    "method": method,
                    "test": accuracy,
                    "calls": calls,
                    "calls_total": sum(calls.values()),
                    "optimize_seconds": round(seconds, 1),
                    "detail": detail,
                    "prompt": {"system": best.system, "template": best.template},
                    "finished": now(),
                }
                save_json(RESULT_FILE, results)
                print(
                    f"{key}: test {accuracy:.3f}, calls {sum(calls.values())} {calls}, "
                    f"{seconds:.0f} s, {detail}",
                    flush=True,
                )
                write_table(results, seeds)


def write_table(results: dict, seeds: list[int], started: str | None = None) -> str:
    cells, size = results["cells"], results["size"]
    rows = []
    for task in TASKS:
        # seeds on which every method finished: the only ones a mean may compare
        full = [seed for seed in seeds if all(f"{task}|{seed}|{m}" in cells for m in METHODS)]
        for method in METHODS:
            done = [c for c in cells.values() if c["task"] == task and c["method"] == method]
            done.sort(key=lambda c: c["seed"])
            per_seed = [
                f"{100 * cells[k]['test']:.1f}" if (k := f"{task}|{seed}|{method}") in cells
                else "not run"
                for seed in seeds
            ]  # fmt: skip
            accs = [100 * cells[f"{task}|{seed}|{method}"]["test"] for seed in full]
            if len(accs) > 1:
                summary = f"{statistics.mean(accs):.1f} ± {statistics.stdev(accs):.1f}"
            elif accs:
                summary = f"{accs[0]:.1f} (1 seed)"
            else:
                summary = "-"
            roles: dict[str, int] = {}
            for c in done:
                for role, n in c["calls"].items():
                    roles[role] = roles.get(role, 0) + n
            per_role = ", ".join(
                f"{r} {n / len(done):.1f}" for r, n in sorted(roles.items())
            )  # fmt: skip
            rows.append(
                [
                    task,
                    method,
                    *per_seed,
                    summary,
                    f"{mean([c['calls_total'] for c in done]):.1f}" if done else "-",
                    f"{mean([c['optimize_seconds'] for c in done]):.0f}" if done else "-",
                    per_role or "-",
                    "; ".join(f"seed {c['seed']}: {c['detail']}" for c in done if c["detail"])
                    or "-",
                ]
            )
    table = markdown_table(
        [
            "task",
            "method",
            *[f"seed {seed} test %" for seed in seeds],
            "mean ± std over seeds all methods finished",
            "calls (mean)",
            "optimize s (mean)",
            "calls per role (mean)",
            "run details",
        ],
        rows,
    )
    expected = len(TASKS) * len(METHODS) * len(seeds)
    complete = len(cells) >= expected
    status = (
        "complete"
        if complete
        else f"PARTIAL: {len(cells)} of {expected} cells finished; missing cells say 'not run'"
    )
    body = (
        header(
            "Quality on BIG-Bench Hard, embedded model (bench/quality.py)",
            results.get("machine", machine()),
            started or results.get("started", now()),
            commands=(
                "`PROMPT_DESCENT_N_THREADS=1 python bench/quality.py` (resumable: cells already in "
                "bench/results/quality.json are skipped; `--table-only` re-renders this section); "
                "last cell finished " + max((c["finished"] for c in cells.values()), default="-")
            ),
        )
        + f"- model: `{MODEL}` for every role (llama.cpp, PROMPT_DESCENT_N_THREADS="
        f"{results.get('n_threads', 'all')}), task max_tokens 3-4, "
        "gradient 96, apply 128\n"
        f"- REDUCED SIZE: splits train {size['train']} / val {size['val']} / test "
        f"{size['test']} (TextGrad used {TEXTGRAD_SIZE['train']}/{TEXTGRAD_SIZE['val']}/"
        f"{TEXTGRAD_SIZE['test']}), seeds {seeds}, budget {results['budget']} LLM calls per "
        "optimizer run (test scoring excluded, done by the harness for every method)\n"
        f"- status: {status}\n\n"
        + table
        + "\n\nprompt-descent selects on val; the Ape-style loop on the whole train set; Tiny "
        "TextGrad uses no targets and keeps its last revision ('accepted' = revisions that "
        "parsed and kept {input}). Optimize seconds are wall time on the shared 2-core machine "
        "(compare within the table only). Raw cells, prompts included: "
        "`bench/results/quality.json`.\n"
    )
    write_section("quality", body)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--val", type=int, default=24)
    parser.add_argument("--test", type=int, default=60)
    parser.add_argument("--budget", type=int, default=64, help="LLM calls per optimizer run")
    parser.add_argument("--table-only", action="store_true", help="only rewrite the table")
    args = parser.parse_args()
    results = load_results()
    size = {"train": args.train, "val": args.val, "test": args.test}
    if results.setdefault("size", size) != size or results.setdefault("budget", args.budget) != (
        args.budget
    ):
        raise SystemExit(
            f"{RESULT_FILE} holds cells for size {results['size']}, budget {results['budget']}: "
            "move it away to run another size"
        )
    results.setdefault("machine", machine())
    results.setdefault("started", now())
    results.setdefault("n_threads", os.environ.get("PROMPT_DESCENT_N_THREADS", "all"))
    save_json(RESULT_FILE, results)
    if not args.table_only:
        try:
            asyncio.run(run_all(args.seeds))
        finally:
            from prompt_descent.llm.local import llamacpp

            llamacpp.close_all()
    print(write_table(load_results(), args.seeds))


if __name__ == "__main__":
    main()
