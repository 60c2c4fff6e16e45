"""task_runner: thread vs dask at scale, with the 0 ms and the 200 ms scripted fake.

The scale run of bench/scale.py (splits train N/2, val N/4, test N/4; 3 steps, up
to 2 proposals, batch 4, concurrency 32), once per task runner and latency, each in
a fresh process. The dask runner starts a local cluster of `--workers` processes
(one thread each) and sends every fan-out of at least 64 uncached calls there in
shards. Reported: wall time, calls, the time the run spent in fan-outs of 64 or more
calls (what dask takes over) and the peak RSS of the run's own process.

    python bench/task_runner.py [--size 10000] [--latencies 0 0.2] [--workers 2]
"""

from __future__ import annotations

import os
import tempfile

# the dask workers are other processes: they serve bench/calls.py's script from here
os.environ["PROMPT_DESCENT_FAKE_SCRIPT"] = "calls:script"

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path

from _common import (
    RESULTS,
    header,
    machine,
    markdown_table,
    measured_in_child,
    now,
    save_json,
    write_section,
)

RESULT_FILE = RESULTS / "task_runner.json"
LARGE = 64  # DaskSettings.min_calls: the fan-outs dask takes over


async def measure(size: int, runner: str, latency: float, workers: int) -> dict:
    from calls import write_dataset
    from prefect import flow
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    import flows.optimize
    from prompt_descent.core.config import RunConfig
    from prompt_descent.llm.gateway import Gateway

    large_fanouts = {"seconds": 0.0, "count": 0}
    complete_many = Gateway.complete_many

    async def timed(self, role, settings, conversations, *args, **kwargs):
        started = time.perf_counter()
        try:
            return await complete_many(self, role, settings, conversations, *args, **kwargs)
        finally:
            if len(conversations) >= LARGE:
                large_fanouts["seconds"] += time.perf_counter() - started
                large_fanouts["count"] += 1

    Gateway.complete_many = timed

    @flow(name="warm-up")
    async def warm_up() -> None:
        return None

    await warm_up()
    with tempfile.TemporaryDirectory(prefix="pd-runner-") as tmp:
        directory = Path(tmp)
        config = RunConfig(
            name=f"runner-{runner}-{size}",
            model="fake/m",
            prompt={"system": "Answer the question.", "template": "{input}"},
            dataset={"path": str(write_dataset(directory, size)), "id": "id"},
            metric={"name": "exact_match"},
            batch_size=4,
            max_proposals=2,
            steps=3,
            splits={"train": size // 2, "val": size // 4, "test": size // 4},
            concurrency=32,
            store=str(directory / "runs.duckdb"),
            task_runner=runner,
            dask={"workers": workers, "min_calls": LARGE},
        )
        with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: directory / "results"}):
            started = time.perf_counter()
            summary = await flows.optimize.optimize_prompt(config, register_best=False)
            wall = time.perf_counter() - started
    return {
        "size": size,
        "runner": runner,
        "latency": latency,
        "workers": workers,
        "wall": wall,
        "calls": summary.usage.calls,
        "best_val": summary.best_val,
        "best_test": summary.best_test,
        "large_fanouts": large_fanouts,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def table(results: list[dict]) -> str:
    rows = []
    for r in results:
        thread = next(
            (
                t
                for t in results
                if t["runner"] == "thread"
                and (t["size"], t["latency"]) == (r["size"], r["latency"])
            ),
            None,
        )
        ratio = f"{r['wall'] / thread['wall']:.2f}" if thread else "-"
        rows.append(
            [
                f"{r['size']:,}",
                f"{1000 * r['latency']:.0f} ms",
                r["runner"] + (f" ({r['workers']} workers)" if r["runner"] == "dask" else ""),
                f"{r['calls']:,}",
                f"{r['wall']:.1f}",
                ratio,
                f"{r['large_fanouts']['seconds']:.1f} ({r['large_fanouts']['count']})",
                f"{r['peak_rss'] / 1e6:.0f}",
                f"{r['best_val']:.3f} / {r['best_test']:.3f}",
            ]
        )
    return markdown_table(
        [
            "N",
            "latency",
            "task_runner",
            "calls",
            "wall s",
            "wall / thread",
            "in fan-outs of ≥64 calls s (n)",
            "run process peak RSS MB",
            "best val / test",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.0, 0.2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.one:
        runner, latency, size = args.one[0], float(args.one[1]), int(args.one[2])
        print(json.dumps(asyncio.run(measure(size, runner, latency, args.workers))))
        return
    started, machine_line = now(), machine()
    results = []
    for latency in args.latencies:
        for runner in ("thread", "dask"):
            results.append(
                measured_in_child(
                    __file__,
                    ["--workers", str(args.workers), "--one", runner, str(latency), str(args.size)],
                    f"{runner} at {latency} s",
                    env=os.environ | {"PROMPT_DESCENT_FAKE_LATENCY": str(latency)},
                )
            )
            print(f"{runner} {latency}: {results[-1]['wall']:.1f} s", flush=True)
    if not args.no_write:
        save_json(RESULT_FILE, results)
    text = table(results)
    print(text)
    body = (
        header("task_runner: thread vs dask (bench/task_runner.py)", machine_line, started)
        + f"- run: N={args.size:,}, splits train N/2, val N/4, test N/4; 3 steps, up to 2 "
        "proposals, batch 4, concurrency 32; bench/calls.py's scripted fake sleeping `latency` "
        f"per call; dask: a local cluster of {args.workers} worker processes, 1 thread each, "
        f"fan-outs of ≥{LARGE} uncached calls in shards (2 per worker); each cell in a fresh "
        "process after a warm-up flow\n\n" + text + "\n"
    )
    if not args.no_write:
        write_section("task_runner", body)


if __name__ == "__main__":
    main()
