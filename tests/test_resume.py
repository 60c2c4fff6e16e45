"""Kill -9 a run at a random call, resume it, and end where an uninterrupted run ends."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb

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
    directory.mkdir(parents=True)
    path = directory / "run.yaml"
    path.write_text(CONFIG.format(data=DATA, store=directory / "runs.duckdb"))
    return path


def cli(directory: Path, *args: str) -> subprocess.Popen:
    env = os.environ | {
        "PROMPT_DESCENT_FAKE_SCRIPT": "prompt_descent.demo:demo_script",
        "PROMPT_DESCENT_FAKE_LATENCY": "0.05",
        "PREFECT_HOME": str(directory / "prefect"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "prompt_descent.cli", *args],
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the kill takes the Prefect server too
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


def kill_at_call(process: subprocess.Popen, journal: Path, call: int) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= call:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.01)
    raise AssertionError(f"the run ended before call {call}: {process.communicate()[0]}")


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
