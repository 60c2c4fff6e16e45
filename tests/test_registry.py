"""The prompt registry: list, show, export/import, and registered prompts put to work.

Entries are registered straight into the store (as an optimize run does at its end),
and the commands are run through the CLI. `run` uses the scripted fake model, and the
sampling settings it was called with are read back from `llm_calls.params`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from prompt_descent.cli import app
from prompt_descent.core.config import ModelSettings, Prompt
from prompt_descent.errors import UserError
from prompt_descent.features.registry import (
    export_prompt,
    import_prompt,
    list_prompts,
    load_prompt,
    register_prompt,
)
from prompt_descent.storage.store import Store
from prompt_descent.testing.fake import Script, ScriptedModel

RegisterModel = Callable[[Script], ScriptedModel]

SUMMARIZE = Prompt(system="Summarize the text in one line.\nBe terse.", template="Text: {text}")
SHOUT = Prompt(system="Repeat the text in capitals.", template="{text}")
TRANSLATE = Prompt(system="Translate to French.", template="{text}")
SETTINGS = ModelSettings(model="fake/m", temperature=0.3, top_p=0.9, max_tokens=17)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "runs.duckdb")


def register(store: str, name: str, prompt: Prompt, champion: bool = True, **settings: Any) -> int:
    """An entry as optimize_prompt writes it at the end of a run."""
    return register_prompt(
        name,
        prompt,
        SETTINGS.model_copy(update=settings),
        store,
        val_score=0.75,
        test_score=0.5,
        champion=champion,
        run_id=f"run-{name}",
    ).version


@pytest.fixture
def registered(store: str) -> str:
    """summarize: v1, v2 (champion), v3 (not champion); shout: v1 (champion)."""
    register(store, "summarize", SUMMARIZE, temperature=0.0)
    register(store, "summarize", SHOUT)
    register(store, "summarize", TRANSLATE, champion=False, max_tokens=99)
    register(store, "shout", SHOUT)
    return store


# --- load_prompt / list_prompts ---------------------------------------------------------


def test_load_prompt_defaults_to_the_champion_not_the_latest(registered: str) -> None:
    entry = load_prompt("summarize", store=registered)

    assert (entry.version, entry.champion, entry.prompt) == (2, True, SHOUT)
    assert entry.settings == SETTINGS
    assert (entry.val_score, entry.test_score, entry.run_id) == (0.75, 0.5, "run-summarize")
    assert entry.created_at is not None
    latest = load_prompt("summarize", version=3, store=registered)
    assert (latest.prompt, latest.champion, latest.settings.max_tokens) == (TRANSLATE, False, 99)
    assert load_prompt("summarize", version=1, store=registered).prompt == SUMMARIZE


def test_load_prompt_without_a_champion_takes_the_latest(store: str) -> None:
    register(store, "drafts", SUMMARIZE, champion=False)
    register(store, "drafts", SHOUT, champion=False)

    assert load_prompt("drafts", store=store).version == 2


def test_list_prompts_every_version_in_order(registered: str, tmp_path: Path) -> None:
    entries = list_prompts(registered)

    assert [(e.name, e.version) for e in entries] == [
        ("shout", 1),
        ("summarize", 1),
        ("summarize", 2),
        ("summarize", 3),
    ]
    assert [e.champion for e in entries] == [True, False, True, False]
    missing = tmp_path / "nowhere" / "runs.duckdb"
    assert list_prompts(missing) == []
    assert not missing.exists()


def test_unknown_name_and_version_name_what_exists(registered: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no prompt named 'summarise'.*known: shout, summarize"):
        load_prompt("summarise", store=registered)
    with pytest.raises(UserError, match=r"no version 7; known versions: 1, 2, 3"):
        load_prompt("summarize", version=7, store=registered)
    with pytest.raises(UserError, match="the registry is empty.*prompt-import"):
        load_prompt("anything", store=tmp_path / "empty.duckdb")


# --- CLI: prompts, prompt -----------------------------------------------------------------


def test_prompts_command_lists_the_registry(registered: str) -> None:
    result = invoke("prompts", "--store", registered)

    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "summarize" in line]
    assert len(lines) == 3
    assert "fake/m" in lines[0] and "0.750" in lines[0]
    assert sum("*" in line for line in lines) == 1  # one champion per name


def test_prompt_command_shows_the_champion_or_a_version(registered: str) -> None:
    champion = invoke("prompt", "summarize", "--store", registered)
    first = invoke("prompt", "summarize", "--version", "1", "--store", registered)

    assert champion.exit_code == first.exit_code == 0
    assert "summarize v2 (champion)" in champion.output
    assert SHOUT.system in champion.output
    assert "temperature 0.3" in champion.output and "max_tokens 17" in champion.output
    assert "summarize v1" in first.output and "(champion)" not in first.output
    assert "Be terse." in first.output and "Text: {text}" in first.output


@pytest.mark.parametrize(
    "args",
    [
        ("prompt", "nope"),
        ("prompt", "summarize", "--version", "9"),
        ("run", "nope", "--input", "x"),
    ],
)
def test_unknown_name_or_version_exits_2_with_one_line(registered: str, args: tuple) -> None:
    result = invoke(*args, "--store", registered)

    assert result.exit_code == 2
    message = result.output.strip()
    assert message.startswith("error:") and "\n" not in message
    assert "known" in message
    assert "Traceback" not in result.output


# --- export / import ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_export_then_prompt_import_round_trips(
    registered: str, tmp_path: Path, suffix: str
) -> None:
    exported = tmp_path / f"summarize{suffix}"
    other_store = str(tmp_path / "other.duckdb")

    result = invoke(
        "prompt", "summarize", "--version", "1", "--export", str(exported), "--store", registered
    )
    assert result.exit_code == 0, result.output
    data = (
        json.loads(exported.read_text())
        if suffix == ".json"
        else yaml.safe_load(exported.read_text())
    )
    assert data["prompt"] == SUMMARIZE.model_dump()
    assert data["settings"]["temperature"] == 0.0
    assert "api_key_env" not in data["settings"]
    if suffix == ".yaml":
        assert "system: |" in exported.read_text()  # multi-line prompts stay readable

    imported = invoke("prompt-import", str(exported), "digest", "--store", other_store)
    assert imported.exit_code == 0, imported.output
    assert "registered digest v1 (champion)" in imported.output

    original = load_prompt("summarize", version=1, store=registered)
    copy = load_prompt("digest", store=other_store)
    assert copy.prompt == original.prompt
    assert copy.settings == original.settings
    assert (copy.val_score, copy.test_score) == (original.val_score, original.test_score)
    assert (copy.version, copy.champion, copy.run_id) == (1, True, None)


def test_import_keeps_the_file_name_and_adds_a_version(registered: str, tmp_path: Path) -> None:
    path = export_prompt(load_prompt("shout", store=registered), tmp_path / "shout.yml")

    again = import_prompt(path, store=registered, champion=False)

    assert (again.name, again.version, again.champion) == ("shout", 2, False)
    assert load_prompt("shout", store=registered).version == 1  # the champion stays


def test_import_of_a_bad_file_names_the_field(tmp_path: Path, store: str) -> None:
    no_system = tmp_path / "no_system.json"
    no_system.write_text(json.dumps({"name": "x", "prompt": {"template": "{text}"}}))
    no_placeholder = tmp_path / "no_placeholder.yaml"
    no_placeholder.write_text("prompt: {system: s, template: 'no field'}\nsettings: {}\n")

    missing = invoke("prompt-import", str(no_system), "--store", store)
    unusable = invoke("prompt-import", str(no_placeholder), "y", "--store", store)
    wrong_suffix = invoke("prompt-import", str(tmp_path / "p.txt"), "--store", store)

    assert missing.exit_code == unusable.exit_code == wrong_suffix.exit_code == 2
    assert "field 'prompt.system'" in missing.output and "missing" in missing.output
    assert "field 'prompt.template'" in unusable.output and "placeholder" in unusable.output
    assert ".json, .yaml or .yml" in wrong_suffix.output
    assert list_prompts(store) == []


def test_register_prompt_is_the_python_way_to_import(store: str) -> None:
    entry = register_prompt("greet", SHOUT, SETTINGS, store, val_score=0.9)

    assert (entry.version, entry.champion, entry.val_score) == (1, True, 0.9)
    assert load_prompt("greet", store=store) == entry


# --- run ---------------------------------------------------------------------------------------


def echo_upper(model: str, messages: list[dict[str, str]]) -> str:
    return messages[-1]["content"].upper()


def llm_params(store: str) -> list[dict[str, Any]]:
    rows = Store(store).query("SELECT model, params FROM llm_calls WHERE role = 'run'")
    return [{"model": r["model"], **json.loads(r["params"])} for r in rows]


def test_run_input_uses_the_registered_model_and_sampling(
    registered: str, fake_model: RegisterModel
) -> None:
    model = fake_model(echo_upper)

    result = invoke("run", "summarize", "--input", "hello there", "--store", registered)

    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.output.splitlines()] == [
        {"id": "0", "output": "HELLO THERE", "error": None}
    ]
    assert model.calls == [("m", SHOUT.render({"text": "hello there"}))]
    (params,) = llm_params(registered)
    assert params == {
        "model": "fake/m",
        "temperature": 0.3,
        "top_p": 0.9,
        "frequency_penalty": 0.0,
        "max_tokens": 17,
    }
    (run,) = Store(registered).query("SELECT * FROM runs WHERE mode = 'run'")
    assert (run["name"], run["status"]) == ("summarize", "completed")


def test_run_a_version_uses_that_versions_settings(
    registered: str, fake_model: RegisterModel
) -> None:
    fake_model(echo_upper)

    result = invoke("run", "summarize", "--version", "3", "--input", "hi", "--store", registered)

    assert result.exit_code == 0, result.output
    (params,) = llm_params(registered)
    assert (params["temperature"], params["max_tokens"]) == (0.3, 99)


def test_run_file_maps_columns_and_is_cached(
    registered: str, fake_model: RegisterModel, tmp_path: Path
) -> None:
    model = fake_model(echo_upper)
    inputs = tmp_path / "inputs.csv"
    inputs.write_text("key,body\nk1,first\nk2,second\n")
    args = ("run", "shout", "--file", str(inputs), "--field", "text=body", "--id", "key")

    first = invoke(*args, "--store", registered)
    again = invoke(*args, "--store", registered)

    assert first.exit_code == again.exit_code == 0, first.output
    expected = [
        {"id": "k1", "output": "FIRST", "error": None},
        {"id": "k2", "output": "SECOND", "error": None},
    ]
    assert [json.loads(line) for line in first.output.splitlines()] == expected
    assert [json.loads(line) for line in again.output.splitlines()] == expected
    assert len(model.calls) == 2  # the second run was served from the store's call cache


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "exactly one of --input TEXT or --file FILE"),
        (("--input", "a", "--file", "f.csv"), "exactly one of"),
        (("--input", "a", "--field", "text=b"), "--field maps columns of a --file"),
        (("--file", "in.csv", "--field", "txt=b"), "has no placeholder {txt}"),
        (("--file", "in.csv", "--field", "oops"), "placeholder=column"),
    ],
)
def test_run_rejects_bad_input_options(
    registered: str, tmp_path: Path, args: tuple, message: str
) -> None:
    (tmp_path / "in.csv").write_text("text\nx\n")
    args = tuple(str(tmp_path / a) if a.endswith(".csv") else a for a in args)

    result = invoke("run", "shout", *args, "--store", registered)

    assert result.exit_code == 2
    assert message in result.output
