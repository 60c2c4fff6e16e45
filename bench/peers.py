"""prompt-descent against the real peers on BBH-format tasks, on one local model server.

The peers are the packages themselves, each installed by this script into a venv of its
own under bench/.venvs (none is a dependency of the project):

- DSPy 3.4.1 GEPA, and MIPROv2 instruction-only and with demonstrations (bench/peer_dspy.py);
- Ape's TextGradientTrainer from ape-core 0.10.0 / ape-common 0.2.1 (bench/peer_ape.py).

prompt-descent runs as one method per set of levers (LEVERS): plain, with demonstrations,
and with demonstrations plus right cases shown to the gradient (`right_shown`), plus
edits raced three at a time (`race`), or plus a pool of the three best prompts (`pool`),
or plus a val margin of one standard error before an edit is accepted (`margin`).

Every method, prompt-descent included (as `openai/...` models with `api_base`), calls
the same llama-cpp-python OpenAI-compatible servers (bench/peer_server.py): one for the
task model, one for the optimizer model. Each cell sends its own API key and the servers
count the requests per key: that count is a method's calls. Every final prompt is then
scored on the test split by this script, with the project's metric, under a key of its
own that no method's count includes.

    python bench/peers.py [--regime short|reasoning] [--data ../shared/data/bbh]
        [--tasks ...] [--seeds 0 1 2] [--train 24 --val 24 --test 60 --budget 120]
        [--methods ...] [--table-only]

Two regimes (REGIMES): `short`, answers capped at 8 tokens; `reasoning`, a seed prompt
that asks for reasoning and then 'Answer: X', 200 tokens, and the metric reads the answer
from the end of the output (the last label of the task's answer space, or the last
number), for every method alike.

Each finished cell goes to bench/results/peers.json (peers-reasoning.json) at once; a
rerun skips it, so an interrupted run resumes (sizes and budget are kept in the file:
other ones need another `--results` file). A prompt-descent cell's run store (its
iterations, with every decision's reason, its predictions and calls) is kept in
bench/.stores/<section>/, to read with DuckDB afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from _common import (
    RESULTS,
    ROOT,
    bbh_task,
    git_commit,
    header,
    machine,
    markdown_table,
    mean,
    now,
    save_json,
    write_section,
)
from litellm import completion
from peer_metric import score as peer_score
from quality import TASKS

from prompt_descent.core.config import (
    DatasetSpec,
    Example,
    MetricSpec,
    Models,
    ModelSettings,
    Prompt,
    RunConfig,
    Splits,
)
from prompt_descent.core.datasets import DataSplits, load_examples, split_examples
from prompt_descent.llm.local.weights import resolve
from prompt_descent.runtime import tether
from tasks.metric import resolve_metric

VENVS = ROOT / "bench" / ".venvs"
STORES = ROOT / "bench" / ".stores"  # prompt-descent's run stores, one per cell
PEER_PACKAGES = {
    "dspy": ["dspy[optuna]==3.4.1"],
    "ape": ["ape-core==0.10.0", "ape-common==0.2.1"],  # ape-common caps rich<14: not ours
}
SERVER_EXTRAS = VENVS / "server-extras"  # llama-cpp-python's [server] packages, --no-deps
SERVER_PACKAGES = ["sse-starlette", "starlette-context", "pydantic-settings"]
SERVERS = {
    "task": ("qwen2.5-coder-0.5b-instruct", 8101),
    "optimizer": ("qwen2.5-coder-1.5b-instruct", 8102),
}
DEMOS = 4
LEVERS = {  # prompt-descent's methods: the config keys each one turns on
    "prompt-descent": {},
    "prompt-descent-demos": {"demos": {"count": DEMOS}},  # one new set of DEMOS per step
    "prompt-descent-right": {"demos": {"count": DEMOS}, "right_shown": 2},  # and right cases
    "prompt-descent-race": {"demos": {"count": DEMOS}, "race": 3},  # demos, edits 3 at a time
    "prompt-descent-pool": {"demos": {"count": DEMOS}, "pool": 3},  # demos, 3 best kept
    "prompt-descent-margin": {"demos": {"count": DEMOS}, "val_margin": 1.0},  # demos, +1 SE
}
METHODS = [
    "baseline",
    *LEVERS,
    "dspy-gepa",
    "dspy-mipro",
    "dspy-mipro-demos",
    "ape",
]
OPTIMIZER_TOKENS = 384
# the reasoning regime's task instruction, and the labels its answer is read from (None:
# the last number)
REASONING = {
    "sports_understanding": ("Decide whether the sentence is plausible.", ["yes", "no"]),
    "object_counting": ("Count the objects the question asks about.", None),
    "boolean_expressions": ("Evaluate the boolean expression.", ["True", "False"]),
    "formal_fallacies": ("Decide whether the argument is deductively valid.", ["valid", "invalid"]),
}


@dataclass(frozen=True)
class Regime:
    """How the task model answers: its token cap, and each task's seed prompt and metric."""

    name: str
    max_tokens: int
    title: str
    section: str

    @property
    def reasons(self) -> bool:
        return self.name == "reasoning"

    def seed_prompt(self, task: str) -> Prompt:
        if not self.reasons:
            return TASKS[task]["prompt"]
        instruction, labels = REASONING[task]
        if labels:
            ending = " or ".join(f"'Answer: {label}'" for label in labels)
        else:
            ending = "'Answer: N', N the number"
        system = f"{instruction} Think step by step, then finish with the line {ending}."
        return Prompt(system=system, template="{input}")

    def metric(self, task: str) -> dict:
        """The run config's `metric`, which the peers' metric reads too."""
        metric = {"name": TASKS[task]["metric"]}
        if not self.reasons:
            return metric
        labels = REASONING[task][1]
        answer = {"take": "last_label", "labels": labels} if labels else {"take": "last_number"}
        return metric | {"answer": answer}


REGIMES = {
    "short": Regime("short", 8, "short answers", "peers"),
    "reasoning": Regime("reasoning", 200, "reasoning, then an answer", "peers-reasoning"),
}
KEY_ENV = "PEERS_BENCH_KEY"
SCORING_KEY = "test-scoring"


def url(role: str) -> str:
    return f"http://127.0.0.1:{SERVERS[role][1]}/v1"


def ensure_venv(name: str, packages: list[str]) -> Path:
    """The venv bench/.venvs/NAME with `packages`, made or brought up to date."""
    python, marker = VENVS / name / "bin" / "python", VENVS / name / ".installed"
    wanted = " ".join(packages)
    if not marker.exists() or marker.read_text() != wanted:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENVS / name)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *packages], check=True)
        marker.write_text(wanted)
    return python


def ensure_server_extras() -> None:
    if not (SERVER_EXTRAS / ".installed").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(SERVER_EXTRAS),
                *SERVER_PACKAGES,
            ],
            check=True,
        )
        (SERVER_EXTRAS / ".installed").touch()


def start_servers(threads: int) -> list[subprocess.Popen]:
    ensure_server_extras()
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(SERVER_EXTRAS), str(ROOT)])}
    servers = []
    for alias, (model, port) in SERVERS.items():
        command = [
            sys.executable,
            str(ROOT / "bench" / "peer_server.py"),
            "--model",
            f"{alias}={resolve(model)}",
            "--port",
            str(port),
            "--threads",
            str(threads),
        ]
        servers.append(tether.spawn(command, env=env))
    deadline = time.monotonic() + 300
    for role in SERVERS:
        while True:
            try:
                urllib.request.urlopen(url(role) + "/models", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the {role} model server did not start") from None
                time.sleep(1)
    return servers


def served(key: str) -> int:
    """The chat completions both servers made for `key`."""
    total = 0
    for role in SERVERS:
        counts = json.loads(urllib.request.urlopen(url(role)[:-3] + "/counts").read())
        total += counts.get(key, 0)
    return total


def endpoint(role: str, max_tokens: int, temperature: float) -> dict:
    return {
        "model": f"openai/{role}",
        "api_base": url(role),
        "max_tokens": max_tokens,
        "temperature": temperature,
    }


def rows(examples: list[Example]) -> list[dict]:
    return [{"input": e.inputs["input"], "target": e.target} for e in examples]


def run_prompt_descent(
    regime: Regime,
    task: str,
    seed: int,
    data: Path,
    size: dict,
    budget: int,
    key: str,
    levers: dict,
    store: Path,
) -> dict:
    from prompt_descent import api

    def settings(role: str, max_tokens: int, temperature: float = 0.0) -> ModelSettings:
        return ModelSettings(
            model=f"openai/{role}",
            api_base=url(role),
            api_key_env=KEY_ENV,
            max_tokens=max_tokens,
            temperature=temperature,
        )

    os.environ[KEY_ENV] = key
    config = RunConfig(
        name=f"peers-{task}-{seed}",
        prompt=regime.seed_prompt(task),
        dataset=DatasetSpec(path=str(data)),
        metric=regime.metric(task),
        models=Models(
            task=settings("task", regime.max_tokens),
            gradient=settings("optimizer", OPTIMIZER_TOKENS, 0.7),
            apply=settings("optimizer", OPTIMIZER_TOKENS, 0.7),
            judge=settings("task", 4),
        ),
        # the harness's split of the same file with the same seed: the same train and val;
        # the test examples come after them and are not loaded into any split
        splits={"train": size["train"], "val": size["val"], "test": 0},
        seed=seed,
        concurrency=1,
        budget={"max_llm_calls": budget},
        store=str(store),
        **levers,
    )
    summary = api.optimize(config)
    best = api.load_prompt(config.registry_name, store=config.store).prompt
    detail = f"{summary.proposals} proposals, {summary.accepted} accepted"
    if summary.stop_reason:
        detail += f"; {summary.stop_reason}"
    shown = [{"input": d.inputs["input"], "output": d.output} for d in best.demos]
    return {"system": best.system, "template": best.template, "demos": shown, "detail": detail}


def fresh_store(regime: Regime, cell: str) -> Path:
    """Where a prompt-descent cell keeps its run (every iteration, prediction and call, to
    read afterwards): bench/.stores/<section>/<cell>.duckdb, emptied before it runs."""
    store = STORES / regime.section / (cell.replace("|", "-") + ".duckdb")
    store.parent.mkdir(parents=True, exist_ok=True)
    for stale in store.parent.glob(store.name + "*"):  # the database and its WAL
        stale.unlink()
    return store


def run_peer(
    regime: Regime, method: str, task: str, seed: int, splits, budget: int, key: str
) -> dict | None:
    """The peer's final prompt, or None (its error printed) when it failed: the cell is
    left unfinished, for a rerun."""
    venv, script = ("ape", "peer_ape.py") if method == "ape" else ("dspy", "peer_dspy.py")
    python = ensure_venv(venv, PEER_PACKAGES[venv])
    seed_prompt = regime.seed_prompt(task)
    job = {
        "method": method.removeprefix("dspy-"),
        "seed": seed,
        "metric": regime.metric(task),
        "system": seed_prompt.system,
        "template": seed_prompt.template,
        "train": rows(splits.train),
        "val": rows(splits.val),
        "task": endpoint("task", regime.max_tokens, 0.0),
        "optimizer": endpoint("optimizer", OPTIMIZER_TOKENS, 0.7),
        "api_key": key,
        "budget": budget,
        "demos": DEMOS,
        "batch_size": 4,
    }
    with tempfile.TemporaryDirectory(prefix="pd-peers-job-") as tmp:
        job_file, result_file = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_file.write_text(json.dumps(job))
        # the project's root for prompt_descent.core.answers, which bench/peer_metric.py reads
        env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT)])}
        child = subprocess.run(
            [str(python), str(ROOT / "bench" / script), str(job_file), str(result_file)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            print(child.stderr[-4000:], file=sys.stderr)
            return None
        result = json.loads(result_file.read_text())
    template = result.get("template", seed_prompt.template)
    if "{input}" not in template:  # Ape may rewrite the user turn without its placeholder
        template = template.rstrip() + "\n\n{input}"
    return {
        "system": result["system"],
        "template": template,
        "demos": result.get("demos", []),
        "detail": "",
    }


def messages(final: dict, example: Example) -> list[dict[str, str]]:
    """The final prompt as the task model sees it: demonstrations as earlier turns."""
    turns = [{"role": "system", "content": final["system"]}]
    for demo in final["demos"]:
        turns.append({"role": "user", "content": final["template"].format(input=demo["input"])})
        turns.append({"role": "assistant", "content": demo["output"]})
    turns.append({"role": "user", "content": final["template"].format(**example.inputs)})
    return turns


def test_accuracy(regime: Regime, task: str, final: dict, test: list[Example]) -> float:
    spec = regime.metric(task)
    metric = resolve_metric(MetricSpec(**spec))
    total = 0.0
    for example in test:
        response = completion(
            model="openai/task",
            api_base=url("task"),
            api_key=SCORING_KEY,
            messages=messages(final, example),
            max_tokens=regime.max_tokens,
            temperature=0.0,
        )
        output = (response.choices[0].message.content or "").strip()
        value = float(metric(output, example))
        if value != peer_score(spec, output, example.target or ""):
            raise SystemExit(f"bench/peer_metric.py disagrees with tasks.metric on {output!r}")
        total += value
    return total / len(test)


def splits_of(data: Path, size: dict, seed: int) -> DataSplits:
    """A task file's train / val / test examples for a seed: the same for every method."""
    examples = load_examples(DatasetSpec(path=str(data)))
    return split_examples(examples, Splits(**size), seed)


def run_all(args: argparse.Namespace, results: dict, result_file: Path) -> None:
    size, budget, regime = results["size"], results["budget"], REGIMES[args.regime]
    servers = start_servers(args.threads)
    try:
        for seed in args.seeds:
            for task in args.tasks:
                data = bbh_task(args.data, task)
                splits = splits_of(data, size, seed)
                for method in args.methods:
                    cell = f"{task}|{seed}|{method}"
                    if cell in results["cells"]:
                        continue
                    key = f"{method}|{task}|{seed}|{time.time_ns()}"
                    started = time.monotonic()
                    if method == "baseline":
                        seed_prompt = regime.seed_prompt(task)
                        final = {
                            "system": seed_prompt.system,
                            "template": seed_prompt.template,
                            "demos": [],
                            "detail": "",
                        }
                    elif method in LEVERS:
                        final = run_prompt_descent(
                            regime,
                            task,
                            seed,
                            data,
                            size,
                            budget,
                            key,
                            LEVERS[method],
                            fresh_store(regime, cell),
                        )
                    else:
                        final = run_peer(regime, method, task, seed, splits, budget, key)
                        if final is None:
                            print(f"{cell}: FAILED, not recorded", flush=True)
                            continue
                    seconds, calls = time.monotonic() - started, served(key)
                    accuracy = test_accuracy(regime, task, final, splits.test)
                    results["cells"][cell] = {
                        "task": task,
                        "seed": seed,
                        "method": method,
                        "test": accuracy,
                        "calls": calls,
                        "seconds": round(seconds, 1),
                        "prompt": final,
                        "finished": now(),
                        "commit": git_commit(),
                    }
                    save_json(result_file, results)
                    print(
                        f"{cell}: test {accuracy:.3f}, {calls} calls, {seconds:.0f} s "
                        f"{final['detail']}",
                        flush=True,
                    )
                    write_table(args, results)
    finally:
        for server in servers:
            tether.stop(server)


def spread_of(accuracies: list[float]) -> str:
    if len(accuracies) > 1:
        return f"{statistics.mean(accuracies):.1f} ± {statistics.stdev(accuracies):.1f}"
    return f"{accuracies[0]:.1f} (1 seed)" if accuracies else "-"


def gain_over_baseline(gains: list[float]) -> str:
    """The paired gain over the seed prompt, ± its standard error, marked when outside 2 s.e."""
    if len(gains) < 2:
        return f"{gains[0]:+.1f} (1 seed)" if gains else "-"
    error = statistics.stdev(gains) / len(gains) ** 0.5
    outside = " **> 2 s.e.**" if statistics.mean(gains) > 2 * error else ""
    return f"{statistics.mean(gains):+.1f} ± {error:.1f}{outside}"


OURS = {  # the prompt-descent methods set against the best peer, and how each was chosen
    "prompt-descent-demos": "fixed before the other levers ran, not picked on test",
    "prompt-descent-margin": "chosen after seeing earlier test cells, so not free of selection "
    "on test",
}
PEERS = ["dspy-gepa", "dspy-mipro", "dspy-mipro-demos", "ape"]


def accuracies_by_seed(cells: dict, task: str, method: str, seeds: list[int]) -> dict[int, float]:
    return {
        seed: 100 * cells[cell]["test"]
        for seed in seeds
        if (cell := f"{task}|{seed}|{method}") in cells
    }


def versus_best_peer(args: argparse.Namespace, cells: dict, method: str) -> str:
    """`method` against the peer with the best mean on each task (picked on test, which
    favours the peer), paired by seed over the seeds both have; "" when no task has both."""
    rows = []
    for task in args.tasks:
        ours = accuracies_by_seed(cells, task, method, args.seeds)
        peers = {m: accuracies_by_seed(cells, task, m, args.seeds) for m in PEERS}
        peers = {m: by_seed for m, by_seed in peers.items() if len(by_seed) >= 2}
        if len(ours) < 2 or not peers:
            continue
        best = max(peers, key=lambda m: mean(list(peers[m].values())))
        both = [seed for seed in ours if seed in peers[best]]
        differences = [ours[seed] - peers[best][seed] for seed in both]
        difference = mean(differences)
        error = statistics.stdev(differences) / len(differences) ** 0.5
        verdict = (
            "inside the noise"
            if abs(difference) <= 2 * error
            else ("ahead, > 2 s.e." if difference > 0 else "behind, > 2 s.e.")
        )
        calls = [mean([cells[f"{task}|{s}|{m}"]["calls"] for s in both]) for m in (method, best)]
        rows.append(
            [task, best, f"{difference:+.1f} ± {error:.1f}", verdict, *(f"{c:.0f}" for c in calls)]
        )
    if not rows:
        return ""
    return markdown_table(
        [
            "task",
            "best peer (by mean)",
            f"{method} − best peer, points (± s.e., paired)",
            "verdict",
            "our calls",
            "peer calls",
        ],
        rows,
    )


def constant_answers(args: argparse.Namespace, size: dict) -> str:
    """What a prompt that ignores its input can score on each task: the test share of each
    seed's most common answer. Picked on test, so a ceiling for any constant answer."""
    rows = []
    for task in args.tasks:
        shares, answers = [], []
        for seed in args.seeds:
            test = splits_of(bbh_task(args.data, task), size, seed).test
            answer, count = Counter(e.target for e in test).most_common(1)[0]
            shares.append(100 * count / len(test))
            answers.append(answer)
        rows.append([task, ", ".join(dict.fromkeys(answers)), spread_of(shares)])
    return markdown_table(
        ["task", "most common test answer (by seed)", "its share of test %, mean ± std"], rows
    )


def write_table(args: argparse.Namespace, results: dict) -> str:
    """One row per task and method that has cells; each row over the seeds it has."""
    cells, size = results["cells"], results["size"]
    table_rows = []
    for task in args.tasks:
        for method in args.methods:
            done = [cells[c] for s in args.seeds if (c := f"{task}|{s}|{method}") in cells]
            if not done:
                continue
            accuracies = [100 * cell["test"] for cell in done]
            calls = mean([cell["calls"] for cell in done])
            gains = [
                100 * (cell["test"] - cells[base]["test"])
                for cell in done
                if (base := f"{task}|{cell['seed']}|baseline") in cells
            ]
            per_point = (
                f"{calls / mean(gains):.1f}" if method != "baseline" and mean(gains) > 0 else "-"
            )
            table_rows.append(
                [
                    task,
                    method,
                    spread_of(accuracies),
                    "-" if method == "baseline" else gain_over_baseline(gains),
                    f"{calls:.0f}",
                    per_point,
                    len(done),
                ]
            )
    table = markdown_table(
        [
            "task",
            "method",
            "test % (mean ± std over seeds)",
            "gain over baseline (± s.e., paired by seed)",
            "calls (mean)",
            "calls per point gained",
            "seeds",
        ],
        table_rows,
    )
    regime = REGIMES[args.regime]
    cells_file = (
        args.results.relative_to(ROOT) if args.results.is_relative_to(ROOT) else args.results
    )
    body = (
        header(
            f"Quality against the real peers, {regime.title} (bench/peers.py)",
            results["machine"],
            results["started"],
            f"`python bench/peers.py --regime {regime.name}` (the cells of "
            f"`{cells_file}`, run over several sessions)",
        )
        + f"- models: task `{SERVERS['task'][0]}` (max_tokens {regime.max_tokens}), optimizer "
        f"roles `{SERVERS['optimizer'][0]}` (max_tokens {OPTIMIZER_TOKENS}), one "
        "llama-cpp-python server each; calls counted at the servers\n"
        f"- splits train {size['train']} / val {size['val']} / test {size['test']}, the same for "
        f"every method; budget {results['budget']} optimizer calls; test scoring not counted\n\n"
        + ran_at(cells.values())
        + table
        + "".join(
            f"\n\n{method} (levers `{LEVERS[method]}`, {chosen}) against the best peer:\n\n{versus}"
            for method, chosen in OURS.items()
            if (versus := versus_best_peer(args, cells, method))
        )
        + "\n\nA constant answer scores (the level a prompt must beat to use its input):\n\n"
        + constant_answers(args, size)
        + "\n"
    )
    write_section(regime.section, body)
    print(table)
    return table


def ran_at(cells: Iterable[dict]) -> str:
    """Which code the prompt-descent cells ran (the peers' code is their pinned packages)."""
    ours = [c for c in cells if c["method"] in LEVERS]
    commits = Counter(c.get("commit", "not recorded") for c in ours)
    listed = ", ".join(f"{commit} ({n})" for commit, n in sorted(commits.items()))
    return f"- prompt-descent cells by the commit they ran at (cells): {listed}\n\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", choices=REGIMES, default="short")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bbh")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--val", type=int, default=24)
    parser.add_argument("--test", type=int, default=60)
    parser.add_argument("--budget", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, help="default: bench/results/<section>.json")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    size = {"train": args.train, "val": args.val, "test": args.test}
    args.results = (args.results or RESULTS / f"{REGIMES[args.regime].section}.json").resolve()
    results = (
        json.loads(args.results.read_text())
        if args.results.exists()
        else {
            "size": size,
            "budget": args.budget,
            "regime": args.regime,
            "machine": machine(),
            "started": now(),
            "cells": {},
        }
    )
    held = (results["size"], results["budget"], results.get("regime", "short"))
    if held != (size, args.budget, args.regime):
        raise SystemExit(
            f"{args.results} holds other sizes, budget or regime; give another --results"
        )
    if args.table_only:
        write_table(args, results)
        return
    run_all(args, results, args.results)


if __name__ == "__main__":
    main()
