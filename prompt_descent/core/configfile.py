"""Read a YAML run config into a RunConfig, with errors that point at the line.

Every mistake becomes one UserError line, "file:line field 'x': what is wrong",
so that a user can jump straight to it. Lines come from yaml's node tree, which
keeps the position of every key, walked along the pydantic error's `loc`.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from prompt_descent.core.config import RunConfig
from prompt_descent.errors import UserError

Loc = tuple[int | str, ...]
# Fields whose value an error never repeats: a URL may carry credentials.
NOT_ECHOED = frozenset({"api_base"})


def load_config(path: str | Path) -> RunConfig:
    """The run config in the YAML file at `path`, with its relative paths made absolute."""
    config_path = Path(path).expanduser().resolve()
    if config_path.is_dir():
        raise UserError(f"{path} is a directory, not a config file; give the path of a YAML file")
    if not config_path.is_file():
        raise UserError(f"config file not found: {path}")
    root = _compose(_read_text(config_path), config_path)
    if root is None:
        raise UserError(
            "the config file is empty; it needs at least name, prompt and dataset",
            file=config_path,
        )
    if not isinstance(root, yaml.MappingNode):
        raise UserError(
            f"expected a mapping of settings (name: ..., prompt: ...), got {_node_kind(root)}",
            file=config_path,
            line=_line(root),
        )
    _reject_duplicate_keys(root, config_path)
    data = yaml.SafeLoader("").construct_document(root)
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise _located_error(exc, root, config_path) from None
    return _with_absolute_paths(config, config_path)


def locate_in_config(error: UserError, path: str | Path) -> UserError:
    """`error`, pointed at the line of its field in the config file when it names no file."""
    if error.file is not None or not error.field:
        return error
    config_path = Path(path).expanduser().resolve()
    root = _compose(_read_text(config_path), config_path)
    if not isinstance(root, yaml.MappingNode):
        return error
    line = _line_of(root, tuple(error.field.split(".")))
    message = str(error).removeprefix(f"field '{error.field}': ")
    return type(error)(message, file=config_path, line=line, field=error.field)


def _read_text(config_path: Path) -> str:
    raw = config_path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UserError(
            f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {exc.start}; "
            "save the file as UTF-8",
            file=config_path,
            line=line,
        ) from None


def _compose(text: str, config_path: Path) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "cannot parse"
        if exc.context:
            started = exc.context_mark
            moved = started is not None and (mark is None or started.line != mark.line)
            where = f" started at line {started.line + 1}" if moved else ""
            problem = f"{problem} ({exc.context}{where})"
        raise UserError(
            f"invalid YAML: {problem}; check the indentation and quoting there",
            file=config_path,
            line=mark.line + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:
        raise UserError(f"invalid YAML: {exc}", file=config_path) from None


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"the value {node.value!r}"


def _reject_duplicate_keys(node: yaml.Node, config_path: Path, path: str = "") -> None:
    # yaml silently keeps the last of two equal keys; a user who wrote both meant one.
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _reject_duplicate_keys(item, config_path, f"{path}.{index}" if path else str(index))
        return
    if not isinstance(node, yaml.MappingNode):
        return
    first_lines: dict[str, int] = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            continue
        field = f"{path}.{key.value}" if path else key.value
        if key.value in first_lines and key.value != "<<":
            raise UserError(
                f"duplicate key (first given at line {first_lines[key.value]}); keep one",
                file=config_path,
                line=_line(key),
                field=field,
            )
        first_lines[key.value] = _line(key)
        _reject_duplicate_keys(value, config_path, field)


def _located_error(exc: ValidationError, root: yaml.MappingNode, config_path: Path) -> UserError:
    # pydantic lists field errors before unknown keys; the reader wants file order.
    located = sorted(
        ((_line_of(root, tuple(error["loc"])), error) for error in exc.errors(include_url=False)),
        key=lambda pair: pair[0],
    )
    line, first = located[0]
    loc: Loc = tuple(first["loc"])
    message = _describe(first, loc)
    if len(located) > 1:
        more = len(located) - 1
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return UserError(
        message,
        file=config_path,
        line=line,
        field=".".join(str(part) for part in loc) or None,
    )


def _line_of(root: yaml.MappingNode, loc: Loc) -> int:
    """The line of the deepest key along `loc` that the file has.

    A missing field stops the walk at its parent, so it points at the parent's key;
    an unknown field is in the file, so it points at the unknown key itself.
    """
    node: yaml.Node = root
    line = _line(root)
    for part in loc:
        found = _child(node, part)
        if found is None:
            break
        line, node = found
    return line


def _child(node: yaml.Node, part: int | str) -> tuple[int, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return _line(key), value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        item = node.value[part]
        return _line(item), item
    return None


def _describe(error: dict, loc: Loc) -> str:
    kind = error["type"]
    if kind == "missing":
        return "this required field is missing; add it"
    if kind == "extra_forbidden":
        return _unknown_field_message(loc)
    message = error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    if loc and loc[-1] in NOT_ECHOED:
        return message
    if isinstance(given, str | int | float | bool) or given is None:
        message += f" (got {given!r})"
    return message


def _unknown_field_message(loc: Loc) -> str:
    allowed = _allowed_fields(loc[:-1])
    if not allowed:
        return "unknown field; remove it"
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown field; {hint}allowed here: {', '.join(allowed)}"


def _allowed_fields(loc: Loc) -> list[str]:
    """The field names of the model at `loc` inside RunConfig (empty if it is not a model)."""
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [name for name, field in model.model_fields.items() if not field.exclude]


def _with_absolute_paths(config: RunConfig, config_path: Path) -> RunConfig:
    """Paths in the file are relative to the file, not to wherever the command runs.

    `store` is the exception when the file does not set it: the default store is the
    project's, relative to the working directory, so that every config run from the
    project root lands in the same history.
    """
    base = config_path.parent
    dataset = config.dataset.model_copy(
        update={
            "path": _absolute(config.dataset.path, base),
            "database": _absolute(config.dataset.database, base),
        }
    )
    store_base = base if "store" in config.model_fields_set else Path.cwd()
    return config.model_copy(
        update={
            "dataset": dataset,
            "store": _absolute(config.store, store_base),
            "source": config_path,
        }
    )


def _absolute(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    expanded = Path(path).expanduser()
    return str(expanded if expanded.is_absolute() else (base / expanded).resolve())
