"""Run start on a grown store: loading the call cache from K stored calls.

Every run starts by reading which calls the store already holds, so that none is paid
twice. A scheduled re-optimization adds to the same store run after run, so K grows
without bound. For K = 2,000, 20,000 and 200,000 stored calls (each ~100 words of
messages, ~10 of response), in a fresh process each: the time to load the cache
(Store.cached_calls), the resident memory it adds, and the time to serve one hit.

    python bench/store_growth.py [--sizes 2000 20000 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
from pathlib import Path

from _common import header, machine, markdown_table, measured_in_child, now, write_section

from prompt_descent.core.config import ModelSettings
from prompt_descent.core.results import CallRecord
from prompt_descent.llm.gateway import Gateway, call_key, request_params
from prompt_descent.storage.store import Store

WRITE_CHUNK = 20_000
SETTINGS = ModelSettings(model="fake/m", max_tokens=8)


def messages(number: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Answer the question. " * 10},
        {"role": "user", "content": f"q{number} " * 70},
    ]


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def fill(store: Store, size: int) -> None:
    params = request_params(SETTINGS, False, None)
    for start in range(0, size, WRITE_CHUNK):
        calls = [
            CallRecord(
                key=call_key(SETTINGS.model, messages(i), params),
                role="predict",
                model=SETTINGS.model,
                messages=messages(i),
                params=params,
                response=f"the answer to q{i} " * 2,
                prompt_tokens=100,
                completion_tokens=10,
            )
            for i in range(start, min(size, start + WRITE_CHUNK))
        ]
        store.save_step("grown", prompts=[], calls=calls)


def measure(size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="pd-store-") as tmp:
        store = Store(Path(tmp) / "runs.duckdb")
        fill(store, size)
        gc.collect()
        before = rss_mb()
        started = time.perf_counter()
        cache = store.cached_calls()
        load_s = time.perf_counter() - started
        added = rss_mb() - before
        gateway = Gateway(cache=cache)
        started = time.perf_counter()
        served = asyncio.run(gateway.complete("predict", SETTINGS, messages(size // 2)))
        hit_ms = 1000 * (time.perf_counter() - started)
        assert served.cached and gateway.usage.calls == 0
        return {
            "size": size,
            "load_s": load_s,
            "rss_mb": added,
            "hit_ms": hit_ms,
            "file_mb": (Path(tmp) / "runs.duckdb").stat().st_size / 2**20,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 20_000, 200_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    started, machine_line = now(), machine()
    results = [
        measured_in_child(__file__, ["--one", str(size)], f"K={size}") for size in args.sizes
    ]
    table = markdown_table(
        ["stored calls", "DuckDB MB", "cache load s", "memory added MB", "one hit ms"],
        [
            [
                f"{r['size']:,}",
                f"{r['file_mb']:.0f}",
                f"{r['load_s']:.2f}",
                f"{r['rss_mb']:.0f}",
                f"{r['hit_ms']:.1f}",
            ]
            for r in results
        ],
    )
    print(table)
    body = (
        header("Run start on a grown store (bench/store_growth.py)", machine_line, started)
        + "- what: `Store.cached_calls()` as every run calls it at its start, over K stored "
        "calls (~100 words of messages and ~10 of response each), in a fresh process per K; "
        "memory added = resident set after minus before; one hit = a gateway call served "
        "from that cache\n\n" + table + "\n"
    )
    if not args.no_write:
        write_section("store_growth", body)


if __name__ == "__main__":
    main()
