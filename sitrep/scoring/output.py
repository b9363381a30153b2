"""The output rows: one per scored sentence, the same columns for Parquet, JSONL and the Ray engine.

id                   string        the input row's id
sentence_index       int32         (--documents) 0-based sentence number within the document
start, end           int32         (--documents) character offsets: document[start:end] == sentence
text                 string        (--include-text) the scored text, byte for byte
labels               list<string>  labels at or above the bundle's thresholds, in LABELS order
score_<label>        float32       one calibrated, independent probability per label (LABELS order)
truncated            bool          the text was longer than the model's max length and was cut
model_name           string        the bundle's name
model_version        string        the bundle's version
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from sitrep.models.labels import LABELS
from sitrep.models.runtime import Result

SCORE_COLUMNS: tuple[str, ...] = tuple(f"score_{label}" for label in LABELS)


def output_schema(documents: bool, include_text: bool) -> pa.Schema:
    fields: list[pa.Field] = [pa.field("id", pa.string())]
    if documents:
        fields += [
            pa.field("sentence_index", pa.int32()),
            pa.field("start", pa.int32()),
            pa.field("end", pa.int32()),
        ]
    if include_text:
        fields.append(pa.field("text", pa.string()))
    fields.append(pa.field("labels", pa.list_(pa.string())))
    fields += [pa.field(name, pa.float32()) for name in SCORE_COLUMNS]
    fields += [
        pa.field("truncated", pa.bool_()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
    ]
    return pa.schema(fields)


def build_table(
    schema: pa.Schema,
    ids: Sequence[str],
    result: Result,
    model_name: str,
    model_version: str,
    *,
    sentence_index: Sequence[int] | None = None,
    starts: Sequence[int] | None = None,
    ends: Sequence[int] | None = None,
    texts: Sequence[str] | None = None,
) -> pa.Table:
    """Arrow table in `schema`'s column order from one runtime Result (rows in input order)."""
    n = len(ids)
    probs = np.asarray(result.probs, dtype=np.float32).reshape(n, len(LABELS))
    columns: dict[str, pa.Array] = {
        "id": pa.array(ids, type=pa.string()),
        "labels": pa.array(result.labels, type=pa.list_(pa.string())),
        "truncated": pa.array(result.truncated, type=pa.bool_()),
        "model_name": pa.repeat(pa.scalar(model_name, pa.string()), n),
        "model_version": pa.repeat(pa.scalar(model_version, pa.string()), n),
    }
    for j, name in enumerate(SCORE_COLUMNS):
        columns[name] = pa.array(np.ascontiguousarray(probs[:, j]), type=pa.float32())
    if "sentence_index" in schema.names:
        for name, values in (("sentence_index", sentence_index), ("start", starts), ("end", ends)):
            if values is None:
                raise ValueError(f"document mode needs {name}")
            columns[name] = pa.array(values, type=pa.int32())
    if "text" in schema.names:
        if texts is None:
            raise ValueError("include_text needs the texts")
        columns["text"] = pa.array(texts, type=pa.string())
    return pa.table([columns[f.name] for f in schema], schema=schema)


def table_to_jsonl(table: pa.Table) -> str:
    """JSON lines with the same fields as the Parquet output (non-ASCII text kept as is)."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist())
