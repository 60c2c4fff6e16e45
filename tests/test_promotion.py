"""An optimize run registers a version; it becomes the champion only as `promote` rules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from rich.console import Console
from test_cli import BASE_SYSTEM, CONFIG, MARKER, script, write_dataset
from typer.testing import CliRunner, Result

from prompt_descent import cli
from prompt_descent.core.config import Prompt
from prompt_descent.testing.fake import Script, ScriptedModel

RegisterModel = Callable[[Script], ScriptedModel]


@pytest.fixture
def project(tmp_path: Path, fake_model: RegisterModel, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake_model(script)
    monkeypatch.setattr(cli, "console", Console(width=400))
    write_dataset(tmp_path)
    (tmp_path / "run.yaml").write_text(CONFIG.format(system=BASE_SYSTEM))
    return tmp_path


def optimize(project: Path, *options: str, model: str = "fake/m") -> Result:
    config = project / "run.yaml"
    text = CONFIG.format(system=BASE_SYSTEM).replace("model: fake/m", f"model: {model}")
    config.write_text(text)
    result = CliRunner().invoke(cli.app, ["optimize", str(config), *options])
    assert result.exit_code == 0, result.output
    return result


def registry(project: Path) -> list[tuple]:
    with duckdb.connect(str(project / "runs.duckdb"), read_only=True) as con:
        return con.execute(
            "SELECT version, model, champion FROM registry ORDER BY version"
        ).fetchall()


def promotions(project: Path) -> list[tuple]:
    with duckdb.connect(str(project / "runs.duckdb"), read_only=True) as con:
        return con.execute(
            "SELECT champion_version, promoted, promoted_version, reason FROM promotions "
            "ORDER BY created_at"
        ).fetchall()


def test_a_run_takes_the_champion_only_when_it_beats_it_with_the_same_model(project: Path) -> None:
    first = optimize(project)
    assert "cli-optimize v1 (champion)" in first.stdout
    assert "the first version of cli-optimize" in first.stdout

    # another task model: its scores say nothing about the champion's
    other = optimize(project, model="fake/other")
    assert "cli-optimize v2 (not champion)" in other.stdout
    assert "tuned for fake/m and this run for fake/other" in other.stdout

    # the same model, and the best prompt only ties the champion on test
    tie = optimize(project)
    assert "cli-optimize v3 (not champion)" in tie.stdout

    assert registry(project) == [
        (1, "fake/m", True),
        (2, "fake/other", False),
        (3, "fake/m", False),
    ]
    rows = promotions(project)
    assert [row[:3] for row in rows] == [(None, True, 1), (1, False, None), (1, False, None)]
    assert rows[2][3] == "no proposal beat champion v1 during optimization; kept"

    served = CliRunner().invoke(
        cli.app, ["prompt", "cli-optimize", "--config", str(project / "run.yaml")]
    )
    assert served.exit_code == 0, served.output
    assert "v1 (champion)" in served.stdout
    assert Prompt(system=f"{BASE_SYSTEM} {MARKER}").id in served.stdout


def test_promote_always_and_never_make_the_choice_explicit(project: Path) -> None:
    optimize(project)
    optimize(project, "--promote", "never", model="fake/other")
    always = optimize(project, "--promote", "always", model="fake/other")
    assert "cli-optimize v3 (champion)" in always.stdout and "promote: always" in always.stdout
    assert registry(project) == [
        (1, "fake/m", False),
        (2, "fake/other", False),
        (3, "fake/other", True),
    ]
    assert [row[1] for row in promotions(project)] == [True, False, True]


def test_a_bad_promote_value_is_one_line(project: Path) -> None:
    config = project / "run.yaml"
    config.write_text(CONFIG.format(system=BASE_SYSTEM) + "promote: sometimes\n")
    result = CliRunner().invoke(cli.app, ["optimize", str(config)])
    assert result.exit_code == 2
    message = result.output.strip()
    assert "\n" not in message and "run.yaml:13" in message and "'promote'" in message, message
    assert not (project / "runs.duckdb").exists()
