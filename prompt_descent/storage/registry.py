"""The prompt registry's tables: the versions of each name, and the promotions."""

from __future__ import annotations

import duckdb

from prompt_descent.core.config import ModelSettings, Prompt
from prompt_descent.core.results import Promotion, RegisteredPrompt
from prompt_descent.storage.database import Database
from prompt_descent.storage.runs import prompt_row, stored_prompt

# The settings the registry keeps (credentials and endpoints stay with the user's config).
REGISTERED_SETTINGS = ("model", "temperature", "top_p", "frequency_penalty", "max_tokens")


class RegistryRecords(Database):
    """The registry tables of one store."""

    def add_version(
        self,
        name: str,
        prompt: Prompt,
        settings: ModelSettings,
        *,
        val_score: float | None,
        test_score: float | None,
        champion: bool,
        run_id: str | None,
    ) -> int:
        """Add `prompt` as the next version of `name`; returns the version number. A
        champion version takes the title from the name's earlier champion."""

        def write(con: duckdb.DuckDBPyConnection) -> int:
            stored = prompt_row(prompt)
            con.execute(
                f"INSERT INTO prompts ({', '.join(stored)}) "
                f"VALUES ({', '.join('?' for _ in stored)}) ON CONFLICT DO NOTHING",
                list(stored.values()),
            )
            (version,) = con.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM registry WHERE name = ?", [name]
            ).fetchone()
            if champion:
                con.execute("UPDATE registry SET champion = false WHERE name = ?", [name])
            row = {
                "name": name,
                "version": version,
                "prompt_id": prompt.id,
                **settings.model_dump(include=set(REGISTERED_SETTINGS)),
                "val_score": val_score,
                "test_score": test_score,
                "champion": champion,
                "run_id": run_id,
            }
            con.execute(
                f"INSERT INTO registry ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                list(row.values()),
            )
            return version

        return self.transaction(write)

    def versions(
        self, name: str | None = None, run_id: str | None = None
    ) -> list[RegisteredPrompt]:
        """Every registered version (of `name`, registered by run `run_id`, if given), by
        name then version."""
        filters = {"r.name": name, "r.run_id": run_id}
        given = {column: value for column, value in filters.items() if value is not None}
        where = " AND ".join(f"{column} = ?" for column in given)
        rows = self.query(
            f"""SELECT r.*, p.system, p.template, p.demos
                FROM registry r JOIN prompts p USING (prompt_id)
                {"WHERE " + where if where else ""} ORDER BY r.name, r.version""",
            list(given.values()),
        )
        return [
            RegisteredPrompt(
                name=row["name"],
                version=row["version"],
                prompt=stored_prompt(row),
                settings=ModelSettings(**{key: row[key] for key in REGISTERED_SETTINGS}),
                val_score=row["val_score"],
                test_score=row["test_score"],
                champion=row["champion"],
                run_id=row["run_id"],
                created_at=row["created_at"],
            )
            for row in rows
        ]

    def record_promotion(self, promotion: Promotion) -> None:
        """Why a challenger was or was not promoted: one row of `promotions`."""
        row = promotion.model_dump()
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self.transaction(
            lambda con: con.execute(
                f"INSERT INTO promotions ({columns}) VALUES ({marks})", list(row.values())
            )
        )
