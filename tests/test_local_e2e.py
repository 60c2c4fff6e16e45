"""A real optimization, end to end, on the embedded local model: no fake, no network."""

from __future__ import annotations

from pathlib import Path

import duckdb
from typer.testing import CliRunner

from prompt_descent import cli

DATA = Path(__file__).resolve().parents[1] / "data" / "contains_answer.jsonl"
MODEL = "local/qwen2.5-coder-0.5b-instruct"  # the smallest that writes the apply step's JSON
CONFIG = f"""\
name: local-e2e
model: {MODEL}
prompt:
  system: Read the text and the question, then respond.
  template: "Text: {{text}}\\nQuestion: {{question}}\\nAnswer:"
dataset: {{path: {DATA}, fields: {{text: text, question: question}}, target: answer}}
batch_size: 4
max_proposals: 1
steps: 1
splits: {{train: 4, val: 4, test: 4}}
concurrency: 1
models:
  task: {{max_tokens: 4}}
  gradient: {{max_tokens: 96}}
  apply: {{max_tokens: 160}}
"""


def test_a_real_optimization_on_the_local_model_is_recorded_and_registered(
    tmp_path: Path,
) -> None:
    store = tmp_path / "runs.duckdb"
    (tmp_path / "run.yaml").write_text(CONFIG + f"store: {store}\n")

    result = CliRunner().invoke(
        cli.app, ["optimize", str(tmp_path / "run.yaml"), "--run-id", "e2e"]
    )

    assert result.exit_code == 0, result.output
    assert "run e2e (completed)" in result.output
    with duckdb.connect(str(store), read_only=True) as con:
        iterations = con.execute(
            "SELECT count(*), count(reason) FROM iterations WHERE run_id = 'e2e'"
        ).fetchone()
        calls, tokens, cost, models = con.execute(
            "SELECT count(*), sum(prompt_tokens + completion_tokens), sum(cost_usd), "
            "list(DISTINCT model) FROM llm_calls WHERE run_id = 'e2e'"
        ).fetchone()
        roles = {
            role
            for (role,) in con.execute(
                "SELECT DISTINCT role FROM llm_calls WHERE run_id = 'e2e'"
            ).fetchall()
        }
        registered = con.execute(
            "SELECT r.model, r.max_tokens, r.champion, p.system FROM registry r "
            "JOIN prompts p USING (prompt_id) WHERE r.run_id = 'e2e'"
        ).fetchall()
        outputs = con.execute(
            "SELECT output FROM predictions WHERE run_id = 'e2e' AND split = 'val'"
        ).fetchall()
    assert iterations[0] >= 1 and iterations[0] == iterations[1]
    assert calls >= 9 and tokens > calls * 10
    assert cost == 0 and models == [MODEL]
    assert {"predict", "gradient", "apply"} <= roles
    assert len(registered) == 1
    model, max_tokens, champion, system = registered[0]
    assert (model, max_tokens, champion) == (MODEL, 4, True) and system.strip()
    assert all(output.strip() for (output,) in outputs), "the real model answered every example"
