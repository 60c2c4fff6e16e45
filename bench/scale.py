"""Scale: N = 100, 1,000, 10,000 examples with the 0 ms scripted fake model.

Each N runs in a fresh process (so peak memory is its own): splits train N/2,
val N/4, test N/4, 3 steps, up to 2 proposals, batch 4, concurrency 32. Reported
per step kind: wall time summed over its task runs and the peak RSS reached while
it ran (a sampling thread reads /proc/self/statm every 5 ms), plus DuckDB write
time, the DuckDB file size and calls made. Linear growth is checked as time per
call and bytes per call staying flat as N grows.

The `task_runner: dask` option is measured at N=10,000 by bench/task_runner.py.

    python bench/scale.py [--sizes 100 1000 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from collections import defaultdict
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

RESULT_FILE = RESULTS / "scale.json"
STEP_KINDS = ["predict", "metric", "gradient", "apply", "validate", "decide"]
PAGE = os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """The highest resident set size since the last reset, sampled every 5 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.current())

    def reset(self) -> None:
        self.peak = self.current()

    def stop(self) -> None:
        self._stop.set()


async def measure(size: int) -> dict:
    from calls import script, write_dataset
    from prefect import flow
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    import flows.optimize
    from prompt_descent.core.config import DatasetSpec, Prompt, RunConfig, Splits
    from prompt_descent.llm.gateway import register_provider
    from prompt_descent.storage import store
    from prompt_descent.storage import writer as recorder
    from prompt_descent.testing.fake import ScriptedModel

    register_provider("fake", ScriptedModel(script))
    rss = PeakRss()
    seconds: dict[str, float] = defaultdict(float)
    peaks: dict[str, int] = defaultdict(int)
    runs: dict[str, int] = defaultdict(int)

    def tracked(kind: str, task):
        async def wrapper(*args, **kwargs):
            rss.reset()
            started = time.perf_counter()
            try:
                return await task(*args, **kwargs)
            finally:
                seconds[kind] += time.perf_counter() - started
                peaks[kind] = max(peaks[kind], rss.peak)
                runs[kind] += 1

        return wrapper

    for kind in STEP_KINDS:
        setattr(flows.optimize, kind, tracked(kind, getattr(flows.optimize, kind)))
    save_steps, flush = store.Store.save_steps, recorder.RunWriter.flush

    def timed_save(self, *args, **kwargs):  # on the recorder's worker thread
        started = time.perf_counter()
        try:
            return save_steps(self, *args, **kwargs)
        finally:
            seconds["duckdb writes"] += time.perf_counter() - started
            runs["duckdb writes"] += 1

    async def timed_flush(self):  # what the flow waits for
        started = time.perf_counter()
        try:
            return await flush(self)
        finally:
            seconds["duckdb flush"] += time.perf_counter() - started

    store.Store.save_steps, recorder.RunWriter.flush = timed_save, timed_flush

    @flow(name="warm-up")
    async def warm_up() -> None:
        return None

    await warm_up()
    baseline_rss = PeakRss.current()
    with tempfile.TemporaryDirectory(prefix="pd-scale-") as tmp:
        directory = Path(tmp)
        config = RunConfig(
            name=f"scale-{size}",
            model="fake/m",
            prompt=Prompt(system="Answer the question.", template="{input}"),
            dataset=DatasetSpec(path=str(write_dataset(directory, size)), id="id"),
            metric={"name": "exact_match"},
            batch_size=4,
            max_proposals=2,
            steps=3,
            seed=0,
            splits=Splits(train=size // 2, val=size // 4, test=size // 4),
            concurrency=32,
            store=str(directory / "runs.duckdb"),
        )
        with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: directory / "results"}):
            started = time.perf_counter()
            summary = await flows.optimize.optimize_prompt(config, register_best=False)
            wall = time.perf_counter() - started
        db_bytes = (directory / "runs.duckdb").stat().st_size
        results_bytes = sum(
            p.stat().st_size for p in (directory / "results").rglob("*") if p.is_file()
        )
    rss.stop()
    return {
        "size": size,
        "wall": wall,
        "calls": summary.usage.calls,
        "accepted": summary.accepted,
        "proposals": summary.proposals,
        "db_bytes": db_bytes,
        "prefect_results_bytes": results_bytes,
        "rss_before_run": baseline_rss,
        "seconds": dict(seconds),
        "peaks": dict(peaks),
        "runs": dict(runs),
    }


def mb(value: float) -> str:
    return f"{value / 1e6:.1f}"


def table(results: list[dict]) -> str:
    headers = ["N", "calls", "wall s", "ms / call", "DuckDB MB", "KB / call", "Prefect results MB"]
    headers += [f"{k} s (peak RSS MB)" for k in STEP_KINDS]
    headers += ["DuckDB writes behind s (n)", "waiting for writes s"]
    rows = []
    for r in results:
        s, p = r["seconds"], r["peaks"]
        row = [
            f"{r['size']:,}",
            f"{r['calls']:,}",
            f"{r['wall']:.1f}",
            f"{1000 * r['wall'] / r['calls']:.1f}",
            mb(r["db_bytes"]),
            f"{r['db_bytes'] / r['calls'] / 1000:.1f}",
            mb(r["prefect_results_bytes"]),
        ]
        row += [f"{s.get(k, 0):.2f} ({mb(p.get(k, 0))})" for k in STEP_KINDS]
        row += [f"{s.get('duckdb writes', 0):.2f} ({r['runs'].get('duckdb writes', 0)})"]
        row += [f"{s.get('duckdb flush', 0):.2f}"]
        rows.append(row)
    return markdown_table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(measure(args.one))))
        return
    started, machine_line = now(), machine()
    results = []
    for size in args.sizes:
        results.append(measured_in_child(__file__, ["--one", str(size)], f"N={size}"))
        print(f"N={size}: {results[-1]['wall']:.1f} s, {results[-1]['calls']} calls", flush=True)
    if not args.no_write:
        save_json(RESULT_FILE, results)
    text = table(results)
    print(text)
    first, last = results[0], results[-1]
    growth = (last["wall"] / last["calls"]) / (first["wall"] / first["calls"])
    body = (
        header("Scale with N (bench/scale.py)", machine_line, started)
        + "- run: splits train N/2, val N/4, test N/4; 3 steps, up to 2 proposals, batch 4, "
        "concurrency 32; bench/calls.py's scripted fake at 0 ms; each N in a fresh process "
        "after a warm-up flow; peak RSS = process high-water mark while that step ran; DuckDB "
        "writes run behind the flow on the recorder's worker thread, the flow waits only for "
        "the last ones (`RunWriter.flush`)\n"
        f"- time per call at N={last['size']:,} vs N={first['size']:,}: ×{growth:.2f} "
        "(1.00 = linear in calls)\n"
        "- the dask `task_runner`: see bench/task_runner.py\n\n" + text + "\n"
    )
    if not args.no_write:
        write_section("scale", body)


if __name__ == "__main__":
    main()
