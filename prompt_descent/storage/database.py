"""One DuckDB file: opening it, waiting out another process's lock, one transaction
per operation.

Only the flow process writes. DuckDB lets one process hold a file open for
writing, so every operation opens the file, does its work in one transaction and
closes it again (a `session` shares one open among a few operations in a row); a
lock held by another process is waited out with a short retry, so two runs (or a
CLI query during a run) on one file all finish.

Only writers create a store: a `Database(path)` makes the file and its directory on
first use; a reader's `Database(path, create=False)` must find a DuckDB file there.
Either way a path that cannot hold a store is a UserError before anything is made.
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from prompt_descent.errors import UserError
from prompt_descent.runtime import interrupt
from prompt_descent.storage.schema import SCHEMA

T = TypeVar("T")
LOCK_RETRY_SECONDS = 30.0
# DuckDB shares one database instance among a process's connections to a file; two threads
# opening it at once can see the instance before its Python functions are registered, or
# create the schema twice.
_OPENING = threading.Lock()


def _is_lock_conflict(error: duckdb.Error) -> bool:
    return "lock" in str(error).lower()


DUCKDB_MAGIC = b"DUCK"  # bytes 8-12 of every DuckDB file, after the header's checksum
WHERE_TO = "give a store path in a directory you can write"


def _not_a_database(path: Path) -> UserError:
    return UserError(
        f"{path}: not a DuckDB database (the file holds something else); give another "
        "store path, or move this file away if nothing of yours is in it",
        field="store",
    )


def check_readable(path: str | Path) -> None:
    """A UserError unless `path` is an existing DuckDB file; reads 12 bytes, writes nothing."""
    target = Path(path)
    if target.is_dir():
        raise UserError(
            f"{target} is a directory, not a store file; give a file path such as "
            f"{target / 'runs.duckdb'}",
            field="store",
        )
    if not target.is_file():
        raise UserError(
            f"no store at {target}: nothing has been recorded there; check the path "
            "(optimize, evaluate and prompt-import create a store)",
            field="store",
        )
    try:
        with target.open("rb") as file:
            header = file.read(12)
    except OSError as error:
        raise UserError(f"cannot read {target}: {error.strerror}", field="store") from None
    if header[8:12] != DUCKDB_MAGIC:
        raise _not_a_database(target)


def check_writable(path: str | Path) -> None:
    """A UserError if a store cannot be written at `path`; creates nothing that stays."""
    target = Path(path)
    if target.exists():
        check_readable(target)
        if not os.access(target, os.W_OK) or not os.access(target.parent, os.W_OK):
            raise UserError(f"cannot write the store {target}: permission denied", field="store")
        return
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(
            f"cannot create the store {target}: {ancestor} is a file, not a directory; " + WHERE_TO,
            field="store",
        )
    try:  # os.access says yes to root everywhere, /proc included: ask the file system
        handle, probe = tempfile.mkstemp(prefix=".prompt-descent-check-", dir=ancestor)
    except OSError as error:
        raise UserError(
            f"cannot create the store {target}: no file can be made in {ancestor} "
            f"({error.strerror}); " + WHERE_TO,
            field="store",
        ) from None
    os.close(handle)
    os.unlink(probe)


class Database:
    """One DuckDB file. Each operation is one short transaction."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        """`create`: a writer's store, made with its directory on first use if missing;
        without it (a reader's) the file must be a DuckDB store already."""
        self.path = Path(path)
        self.create = create
        if not create:
            check_readable(self.path)
        self._session = threading.local()
        self._schema_ready = False

    @contextmanager
    def session(self) -> Iterator[None]:
        """The operations of this thread inside it share one open of the file.

        Opening and closing are most of a small operation's cost; the file stays locked
        for the session, so keep it to a few operations in a row.
        """
        with self._connect():
            yield

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = getattr(self._session, "con", None)
        if con is not None:  # inside a session
            yield con
            return
        if not self._schema_ready:
            if not self.create:
                check_readable(self.path)  # DuckDB would make a missing file
            elif not self.path.exists():
                check_writable(self.path)
                self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + LOCK_RETRY_SECONDS
        while True:
            try:
                with interrupt.critical(), _OPENING:
                    con = duckdb.connect(str(self.path))
                    if not self._schema_ready:  # on the first open, not in __init__: one fewer
                        con.execute(SCHEMA)
                        self._schema_ready = True
                break
            except duckdb.Error as error:
                if "not a valid DuckDB database" in str(error):
                    raise _not_a_database(self.path) from None
                if not _is_lock_conflict(error) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.05, 0.25))
        self._session.con = con
        try:
            yield con
        finally:
            self._session.con = None
            with interrupt.critical(), _OPENING:
                con.close()

    def transaction(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`work` on an open connection, committed whole or rolled back."""
        with interrupt.critical(), self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                result = work(con)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            return result

    def query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts; for the CLI and for tests."""

        def fetch(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
            cursor = con.execute(sql, params or [])
            columns = [d[0] for d in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

        return self.transaction(fetch)
