"""A store: one DuckDB file with the run tables and the registry tables."""

from __future__ import annotations

from prompt_descent.storage.registry import RegistryRecords
from prompt_descent.storage.runs import RunRecords


class Store(RunRecords, RegistryRecords):
    """One DuckDB file. Each method is one short transaction."""
