"""Errors a person can act on: one line saying what, where and what to do."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A mistake in the user's input or setup. The CLI prints it without a traceback."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        where = ""
        if file is not None:
            where = str(file) + (f":{line}" if line is not None else "")
        if field:
            where = f"{where} field '{field}'" if where else f"field '{field}'"
        super().__init__(f"{where}: {message}" if where else message)
        self.file = file
        self.line = line
        self.field = field


class ModelError(UserError):
    """The model cannot be used at all: unknown name, missing weights, bad credentials."""


class RunStopped(Exception):
    """The run cannot go on, but nothing is wrong with it: stop cleanly, keep the best prompt."""


class BudgetExhausted(RunStopped):
    """A budget would be exceeded by the next call."""


class TooManyFailures(RunStopped):
    """More of a step's calls failed than the configured fraction allows."""
