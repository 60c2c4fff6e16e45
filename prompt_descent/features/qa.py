"""The expand_qa pipeline's data: reply shapes, records, and the pure steps between them.

text -> QA pairs (registered prompt, placeholder {text}) -> each question reworded
three ways (registered prompt, placeholder {question}) -> one row per pair with the
original question first. A text or question whose reply never parsed is still a
row, carrying its error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import duckdb
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from prompt_descent.core.config import DatasetSpec
from prompt_descent.core.results import Record, Usage
from prompt_descent.errors import UserError
from prompt_descent.features.registry import RegisteredPrompt, list_prompts, load_prompt
from prompt_descent.storage.store import Store

QA_PLACEHOLDER = "text"
REPHRASE_PLACEHOLDER = "question"
REWORDINGS = 3
OUTPUT_FORMATS = {".jsonl": "jsonl", ".parquet": "parquet"}

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
PathText = Annotated[
    str, BeforeValidator(lambda value: str(value) if isinstance(value, Path) else value)
]


class Shape(BaseModel):
    model_config = ConfigDict(extra="ignore")


class QAPair(Shape):
    question: Text
    answer: Text


class QAPairs(Shape):
    """What the QA prompt must reply: {"pairs": [{"question": ..., "answer": ...}]}."""

    pairs: list[QAPair] = Field(min_length=1)


class Rephrasings(Shape):
    """What the rephrase prompt must reply: {"rephrasings": [str, str, str]}."""

    rephrasings: list[Text] = Field(min_length=REWORDINGS, max_length=REWORDINGS)


class TextPairs(Record):
    """The QA pairs generated for one text, or why there are none."""

    text_id: str
    pairs: list[QAPair] = []
    error: str | None = None


class Rewording(Record):
    """One question and its rewordings, or why there are none."""

    text_id: str
    pair_index: int
    question: str
    rephrasings: list[str] = []
    error: str | None = None


class ExpandedQA(Record):
    """One row of `expanded_qa`: the original question first, then its rewordings."""

    text_id: str
    pair_index: int
    questions: list[str]
    answer: str | None
    error: str | None = None


class ExpandRequest(Record):
    """What to expand, with which registered prompts, and the file the rows also go to.

    `texts` is a JSONL/CSV/Parquet file with a `text_column`, or a DuckDB query (run
    against `database`, in memory if None).
    """

    texts: PathText
    qa_prompt: str = "qa-pairs"
    rephrase_prompt: str = "rephrase-question"
    output: PathText | None = None
    text_column: str = "text"
    id_column: str | None = None
    database: str | None = None
    max_failed_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Stop once more than this fraction of a step's replies failed to parse "
        "(checked from the 8th reply on); 1: never stop early.",
    )


class ExpandSummary(Record):
    run_id: str
    status: str
    stop_reason: str | None = None
    texts: int
    rows: int
    failed: int
    output: str | None = None
    usage: Usage = Usage()
    seconds: float = 0.0


EXPANDED_QA_TABLE = """
CREATE TABLE IF NOT EXISTS expanded_qa (
    run_id VARCHAR NOT NULL,
    text_id VARCHAR NOT NULL,
    pair_index INTEGER NOT NULL,
    questions VARCHAR[] NOT NULL,
    answer VARCHAR,
    error VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, text_id, pair_index)
);
"""


def save_expanded_qa(store: Store, run_id: str, rows: list[ExpandedQA]) -> None:
    """The pipeline's rows, failed ones with their error, into its own table."""
    if not rows:
        return

    def write(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(EXPANDED_QA_TABLE)
        con.executemany(
            """INSERT OR REPLACE INTO expanded_qa
               (run_id, text_id, pair_index, questions, answer, error)
               VALUES (?, ?, ?, ?, ?, ?)""",
            [[run_id, r.text_id, r.pair_index, r.questions, r.answer, r.error] for r in rows],
        )

    store.transaction(write)


_QUERY = re.compile(r"^\s*(select|with|from|values|table|pivot|unpivot)\b", re.IGNORECASE)


def text_source(request: ExpandRequest) -> DatasetSpec:
    """The request's file (JSONL, CSV, Parquet) or DuckDB query, as a dataset of {text} inputs."""
    common = {
        "fields": {QA_PLACEHOLDER: request.text_column},
        "target": None,
        "id": request.id_column,
    }
    if _QUERY.match(request.texts):
        return DatasetSpec(query=request.texts, database=request.database, **common)
    return DatasetSpec(path=request.texts, **common)


def output_format(output: str | Path | None) -> str | None:
    """'jsonl' or 'parquet' by extension; a UserError before any call is made otherwise."""
    if output is None:
        return None
    found = OUTPUT_FORMATS.get(Path(output).suffix.lower())
    if found is None:
        raise UserError(
            f"output must end in {' or '.join(OUTPUT_FORMATS)}, got '{output}'", field="output"
        )
    return found


def questions_to_reword(pairs: list[TextPairs]) -> list[Rewording]:
    """One pending rewording per generated pair, in text then pair order."""
    return [
        Rewording(text_id=text.text_id, pair_index=index, question=pair.question)
        for text in pairs
        for index, pair in enumerate(text.pairs)
    ]


def expand(pairs: list[TextPairs], rewordings: list[Rewording]) -> list[ExpandedQA]:
    """Rows: one per pair (question + rewordings), or one error row per text without pairs."""
    reworded = {(r.text_id, r.pair_index): r for r in rewordings}
    rows = []
    for text in pairs:
        if not text.pairs:
            rows.append(
                ExpandedQA(
                    text_id=text.text_id,
                    pair_index=0,
                    questions=[],
                    answer=None,
                    error=f"qa pairs: {text.error}",
                )
            )
        for index, pair in enumerate(text.pairs):
            rewording = reworded.get((text.text_id, index))
            error = rewording.error if rewording else "not reworded"
            rows.append(
                ExpandedQA(
                    text_id=text.text_id,
                    pair_index=index,
                    questions=[pair.question, *(rewording.rephrasings if rewording else [])],
                    answer=pair.answer,
                    error=f"rephrase: {error}" if error else None,
                )
            )
    return rows


def write_output(run_id: str, rows: list[ExpandedQA], path: str | Path) -> Path:
    """The rows as JSONL or Parquet (by extension), failed ones with their error."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    records = [{"run_id": run_id, **row.model_dump()} for row in rows]
    if output_format(target) == "jsonl":
        lines = (json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        target.write_text("".join(lines), encoding="utf-8")
        return target
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("run_id", pa.string()),
            ("text_id", pa.string()),
            ("pair_index", pa.int32()),
            ("questions", pa.list_(pa.string())),
            ("answer", pa.string()),
            ("error", pa.string()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(records, schema=schema), target)
    return target


def check_request(
    request: ExpandRequest, store: Store
) -> tuple[RegisteredPrompt, RegisteredPrompt]:
    """The request's QA and rephrase prompts, or a UserError; no text is read yet, so this
    is quick enough to run before a flow run starts."""
    output_format(request.output)
    return (
        registered_prompt(request.qa_prompt, QA_PLACEHOLDER, store),
        registered_prompt(request.rephrase_prompt, REPHRASE_PLACEHOLDER, store),
    )


def registered_prompt(name: str, placeholder: str, store: Store) -> RegisteredPrompt:
    """The registered prompt `name`, checked to fill exactly `{placeholder}`."""
    if not list_prompts(store, name):
        raise UserError(
            f"no prompt registered as '{name}' in {store.path}: run the example configs "
            "(`prompt-descent optimize examples/qa_pairs.yaml`, then examples/rephrase.yaml) "
            f"or register one with `prompt-descent prompt-import FILE {name}`"
        )
    entry = load_prompt(name, store=store)
    if entry.prompt.placeholders() != {placeholder}:
        found = ", ".join(f"{{{p}}}" for p in sorted(entry.prompt.placeholders()))
        raise UserError(
            f"prompt '{name}' v{entry.version} has template placeholders {found}, but expand_qa "
            f"fills exactly {{{placeholder}}}; register a version whose template uses it"
        )
    return entry
