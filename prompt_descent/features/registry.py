"""The prompt registry: optimized prompts by name and version, with the model settings
they were optimized for, ready to be put to work.

Every optimize run registers its best prompt as a new version of its name, and makes it
the champion as its `promote` rule says (features/promotion.py). A name serves its
champion, else its latest version (`load_prompt`); `export_prompt` / `import_prompt` move
a version between projects as JSON or YAML.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from prompt_descent.core.config import ModelSettings, Prompt
from prompt_descent.core.results import RegisteredPrompt
from prompt_descent.errors import UserError
from prompt_descent.storage.registry import REGISTERED_SETTINGS
from prompt_descent.storage.store import Store

DEFAULT_STORE = ".prompt_descent/runs.duckdb"
EXPORT_FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
REGISTER_HINT = (
    "register one with `prompt-descent optimize CONFIG` (register_as: NAME) "
    "or `prompt-descent prompt-import FILE NAME`"
)

StoreLike = str | Path | Store


class ExportedPrompt(BaseModel):
    """What an export file must hold to be imported; the rest of an export is informative."""

    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    prompt: Prompt
    settings: ModelSettings
    val_score: float | None = None
    test_score: float | None = None


def open_store(store: StoreLike, *, create: bool = True) -> Store:
    """`store` as a Store; `create=False` for reading: an existing DuckDB file or a UserError."""
    return store if isinstance(store, Store) else Store(store, create=create)


def _exists(store: StoreLike) -> bool:
    return isinstance(store, Store) or Path(store).is_file()


def _path(store: StoreLike) -> Path:
    return store.path if isinstance(store, Store) else Path(store)


def list_prompts(
    store: StoreLike = DEFAULT_STORE, name: str | None = None
) -> list[RegisteredPrompt]:
    """Every registered version (of `name`, if given), by name then version."""
    if not _exists(store):
        return []
    return open_store(store, create=False).versions(name)


def load_prompt(
    name: str, version: int | None = None, store: StoreLike = DEFAULT_STORE
) -> RegisteredPrompt:
    """The given version of `name`, or the one it serves: see `served`."""
    versions = list_prompts(store, name)
    if not versions:
        known = sorted({entry.name for entry in list_prompts(store)})
        listed = f"known: {', '.join(known)}" if known else "the registry is empty"
        raise UserError(f"no prompt named '{name}' in {_path(store)} ({listed}); {REGISTER_HINT}")
    if version is None:
        return served(versions)
    for entry in versions:
        if entry.version == version:
            return entry
    known_versions = ", ".join(str(entry.version) for entry in versions)
    raise UserError(f"prompt '{name}' has no version {version}; known versions: {known_versions}")


def served(versions: list[RegisteredPrompt]) -> RegisteredPrompt:
    """The version a name serves: its champion (the newest, should there be two), else
    its latest version (one registered with promote: never, before any champion)."""
    champions = [entry for entry in versions if entry.champion]
    return (champions or versions)[-1]


def current_champion(name: str, store: StoreLike = DEFAULT_STORE) -> RegisteredPrompt | None:
    """The newest version of `name` that was promoted, or None."""
    champions = [entry for entry in list_prompts(store, name) if entry.champion]
    return champions[-1] if champions else None


def registered_by(run_id: str, name: str, store: StoreLike = DEFAULT_STORE) -> int | None:
    """The version of `name` that run `run_id` registered, if it did."""
    versions = [entry.version for entry in list_prompts(store, name) if entry.run_id == run_id]
    return versions[-1] if versions else None


def register_prompt(
    name: str,
    prompt: Prompt,
    settings: ModelSettings,
    store: StoreLike = DEFAULT_STORE,
    *,
    val_score: float | None = None,
    test_score: float | None = None,
    champion: bool = True,
    run_id: str | None = None,
) -> RegisteredPrompt:
    """Add `prompt` as the next version of `name` (the champion unless told otherwise)."""
    if not name.strip():
        raise UserError("a registry name cannot be empty")
    the_store = open_store(store)
    version = the_store.add_version(
        name,
        prompt,
        settings,
        val_score=val_score,
        test_score=test_score,
        champion=champion,
        run_id=run_id,
    )
    return load_prompt(name, version, the_store)


def _format(path: Path) -> str:
    found = EXPORT_FORMATS.get(path.suffix.lower())
    if found is None:
        raise UserError(f"cannot tell the format of '{path}': name it .json, .yaml or .yml")
    return found


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (prompts) as readable `|` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def export_data(entry: RegisteredPrompt) -> dict[str, Any]:
    data = entry.model_dump(mode="json")
    data["settings"] = entry.settings.model_dump(include=set(REGISTERED_SETTINGS))
    return data


def export_prompt(entry: RegisteredPrompt, path: str | Path) -> Path:
    """Write `entry` as JSON or YAML (by the file's extension)."""
    target = Path(path)
    data = export_data(entry)
    if _format(target) == "json":
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    else:
        text = yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def read_export(path: str | Path) -> ExportedPrompt:
    source = Path(path)
    file_format = _format(source)
    if not source.is_file():
        raise UserError(f"file not found: {source}")
    text = source.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if file_format == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        problem = " ".join(str(error).split())
        raise UserError(f"not valid {file_format.upper()}: {problem}", file=source) from None
    try:
        return ExportedPrompt.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            message = "this required field is missing (export a prompt to see the format)"
        raise UserError(message, file=source, field=field) from None


def import_prompt(
    path: str | Path,
    name: str | None = None,
    store: StoreLike = DEFAULT_STORE,
    *,
    champion: bool = True,
) -> RegisteredPrompt:
    """Register the prompt in an export file as the next version of `name` (default: its own)."""
    exported = read_export(path)
    name = name or exported.name
    if not name:
        raise UserError(f"{path} names no prompt; give the registry name to import it as")
    return register_prompt(
        name,
        exported.prompt,
        exported.settings,
        store,
        val_score=exported.val_score,
        test_score=exported.test_score,
        champion=champion,
    )
