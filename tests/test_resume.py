"""A run stopped from outside: killed at a random call or stopped by Ctrl-C, it resumes to
where an uninterrupted run ends; and nothing the CLI started outlives it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "contains_answer.jsonl"

CONFIG = """\
name: resume-check
model: fake/demo
prompt:
  system: Read the text and the question, then respond.
  template: "Text: {{text}}\\nQuestion: {{question}}\\nAnswer:"
dataset:
  path: {data}
  fields: {{text: text, question: question}}
  target: answer
batch_size: 4
max_proposals: 2
steps: 3
splits: {{train: 12, val: 12, test: 12}}
concurrency: 2
store: {store}
"""


def write_config(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "run.yaml"
    path.write_text(CONFIG.format(data=DATA, store=directory / "runs.duckdb"))
    return path


def cli(directory: Path, *args: str, latency: float = 0.05, own_server: bool = False):
    """The CLI in a process group of its own, as a terminal runs a command; with
    `own_server` it starts its Prefect server as for a user, else it uses the suite's."""
    env = os.environ | {
        "PROMPT_DESCENT_FAKE_SCRIPT": "prompt_descent.testing.demo:demo_script",
        "PROMPT_DESCENT_FAKE_LATENCY": str(latency),
        "PREFECT_HOME": str(directory / "prefect"),
    }
    if own_server:
        env.pop("PREFECT_API_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "prompt_descent.cli", *args],
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finished(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


def outcome(store: Path, run_id: str) -> tuple:
    with duckdb.connect(str(store), read_only=True) as con:
        return con.execute(
            "SELECT status, baseline_prompt, best_prompt, baseline_val, best_val, baseline_test, "
            "best_test, proposals, accepted FROM runs WHERE run_id = ?",
            [run_id],
        ).fetchone()


def paid_calls(store: Path, run_id: str) -> tuple[int, int]:
    """(successful calls paid, distinct call identities among them)."""
    with duckdb.connect(str(store), read_only=True) as con:
        return con.execute(
            "SELECT count(*), count(DISTINCT call_key) FROM llm_calls "
            "WHERE run_id = ? AND error IS NULL",
            [run_id],
        ).fetchone()


def wait_for_call(process: subprocess.Popen, journal: Path, call: int) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= call:
            return
        time.sleep(0.01)
    raise AssertionError(f"the run ended before call {call}: {process.communicate()[0]}")


def kill_at_call(process: subprocess.Popen, journal: Path, call: int) -> None:
    wait_for_call(process, journal, call)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_a_run_killed_at_a_random_call_resumes_to_the_uninterrupted_result(
    tmp_path: Path,
) -> None:
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    finished(cli(reference_dir, "optimize", str(write_config(reference_dir)), "--run-id", "r"))
    reference = outcome(reference_dir / "runs.duckdb", "r")
    total_calls, _ = paid_calls(reference_dir / "runs.duckdb", "r")
    assert reference[0] == "completed" and reference[-1] >= 1

    kill_at = random.Random(os.environ.get("PYTEST_SEED", "resume")).randint(5, total_calls - 5)
    config = write_config(resumed_dir)
    killed = cli(resumed_dir, "optimize", str(config), "--run-id", "r")
    kill_at_call(killed, resumed_dir / "journal" / "r.jsonl", kill_at)
    assert killed.returncode == -signal.SIGKILL
    assert outcome(resumed_dir / "runs.duckdb", "r")[0] == "running"

    output = finished(cli(resumed_dir, "resume", "r", "--store", str(resumed_dir / "runs.duckdb")))

    assert "run r (completed)" in output
    assert outcome(resumed_dir / "runs.duckdb", "r") == reference
    paid, distinct = paid_calls(resumed_dir / "runs.duckdb", "r")
    assert paid == distinct, "a completed call was paid again after the kill"
    assert paid == total_calls
    assert not (resumed_dir / "journal" / "r.jsonl").exists()


# --- Ctrl-C, and the processes the CLI starts --------------------------------------------


def descendants(pid: int) -> set[int]:
    """Every living process below `pid`."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.add(pid)
    return living


def gone_within(pids: set[int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(pids)


def start(directory: Path) -> subprocess.Popen:
    """An optimize run whose calls take 0.2 s, with the Prefect server it starts itself."""
    config = write_config(directory)
    return cli(directory, "optimize", str(config), "--run-id", "r", latency=0.2, own_server=True)


@pytest.mark.parametrize("target", ["process group", "pid"])
def test_ctrl_c_stops_the_run_says_how_to_resume_and_resume_finishes_it(
    tmp_path: Path, target: str
) -> None:
    store = tmp_path / "runs.duckdb"
    process = start(tmp_path)
    wait_for_call(process, tmp_path / "journal" / "r.jsonl", 10)
    below = descendants(process.pid)
    assert below, "the CLI started no Prefect server"
    sent = time.monotonic()
    if target == "process group":  # what Ctrl-C in a terminal sends
        os.killpg(process.pid, signal.SIGINT)
    else:
        os.kill(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    stopped_after = time.monotonic() - sent

    assert process.returncode == 130, output
    assert stopped_after < 15, f"took {stopped_after:.1f} s to stop"
    assert f"resume it with: prompt-descent resume r --store {store}" in output
    assert "Traceback" not in output
    assert outcome(store, "r")[0] == "stopped"
    assert stop_reason(store) == "interrupted (Ctrl-C)"
    assert not gone_within(below, 10), "a process the CLI started outlived it"
    paid_before, _ = paid_calls(store, "r")
    assert paid_before >= 10  # the calls made before the Ctrl-C are kept

    output = finished(cli(tmp_path, "resume", "r", "--store", str(store)))
    assert "run r (completed)" in output
    paid, distinct = paid_calls(store, "r")
    assert paid == distinct, "a call completed before the Ctrl-C was paid again"
    assert paid > paid_before
    assert not (tmp_path / "journal" / "r.jsonl").exists()


def test_a_second_ctrl_c_quits_at_once_and_the_run_is_not_left_running(tmp_path: Path) -> None:
    process = start(tmp_path)
    wait_for_call(process, tmp_path / "journal" / "r.jsonl", 10)
    below = descendants(process.pid)
    os.killpg(process.pid, signal.SIGINT)
    time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=30)

    assert process.returncode == 130, output
    assert "quit" in output and "Traceback" not in output
    assert outcome(tmp_path / "runs.duckdb", "r")[0] == "stopped"
    assert stop_reason(tmp_path / "runs.duckdb").startswith("interrupted (Ctrl-C)")
    assert not gone_within(below, 10)


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGSEGV], ids=["kill -9", "crash"])
def test_a_killed_or_crashed_cli_leaves_no_process_behind(tmp_path: Path, kill: int) -> None:
    process = start(tmp_path)
    wait_for_call(process, tmp_path / "journal" / "r.jsonl", 5)
    below = descendants(process.pid)
    assert below, "the CLI started no Prefect server"

    os.kill(process.pid, kill)  # the CLI alone, not its group: nothing of ours runs after it
    process.communicate(timeout=30)

    assert process.returncode == -kill
    assert not gone_within(below, 10), "a process the CLI started outlived it"


def stop_reason(store: Path) -> str:
    with duckdb.connect(str(store), read_only=True) as con:
        return con.execute("SELECT stop_reason FROM runs WHERE run_id = 'r'").fetchone()[0]


CAUGHT_IN_A_WRITE = """\
import asyncio, os, signal, sys, time
from prompt_descent.runtime import interrupt
from prompt_descent.runtime.lifecycle import recorded_run
from prompt_descent.storage.store import Store

store = Store(sys.argv[1])

def both_ctrl_cs_mid_write(con):
    con.execute("UPDATE runs SET best_val = 0.5 WHERE run_id = 'r'")
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.3)  # the handlers run here, while the row is being written

async def main():
    async with recorded_run(store, "r", "n", "optimize", {}):
        store.transaction(both_ctrl_cs_mid_write)
        time.sleep(5)

with interrupt.handling_sigint():
    asyncio.run(main())
"""


def test_a_second_ctrl_c_caught_in_the_middle_of_a_write_waits_for_it(tmp_path: Path) -> None:
    store = tmp_path / "runs.duckdb"
    process = subprocess.run(
        [sys.executable, "-c", CAUGHT_IN_A_WRITE, str(store)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert process.returncode == 130, process.stderr
    assert "quit" in process.stderr and "Traceback" not in process.stderr
    with duckdb.connect(str(store), read_only=True) as con:
        status, reason, best_val = con.execute(
            "SELECT status, stop_reason, best_val FROM runs WHERE run_id = 'r'"
        ).fetchone()
    assert (status, best_val) == ("stopped", 0.5)
    assert reason.startswith("interrupted (Ctrl-C), twice")
