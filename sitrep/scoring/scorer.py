"""Turn validated input rows into output rows through the shared runtime (both engines use this).

`prepare` (sentence splitting in --documents mode, then tokenization) is thread-safe and is run
ahead of the model by worker threads; `run` is the model; `table` builds the output rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from sitrep.models.documents import FlatPlan
from sitrep.models.encoding import Encoded
from sitrep.models.runtime import Classifier, Result, Timings
from sitrep.scoring.options import default_batch_size
from sitrep.scoring.output import build_table, output_schema
from sitrep.scoring.reader import CheckedRow
from sitrep.scoring.rejects import NO_SENTENCES, Reject, preview


@dataclass
class Prepared:
    """The texts of one chunk, ready for the model: one entry per sentence to score."""

    ids: list[str]
    texts: list[str]
    encoded: Encoded
    rejects: list[Reject]
    tokenize_s: float
    sentence_index: list[int] | None = None
    starts: list[int] | None = None
    ends: list[int] | None = None


class ChunkScorer:
    def __init__(
        self,
        clf: Classifier,
        *,
        documents: bool = False,
        include_text: bool = False,
        batch_size: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.clf = clf
        self.documents = documents
        self.batch_size = batch_size or default_batch_size(clf.on_gpu)
        self.max_tokens = max_tokens
        self.schema = output_schema(documents, include_text)
        self.model_name = clf.bundle.name
        self.model_version = clf.bundle.version

    def prepare(self, rows: Sequence[CheckedRow]) -> Prepared:
        """Split (document mode) and tokenize. Documents without a sentence become rejects."""
        t0 = time.perf_counter()
        rejects: list[Reject] = []
        if not self.documents:
            ids = [r.id for r in rows]  # good rows: id and text are set
            texts = [r.text for r in rows]
            return Prepared(ids, texts, self.clf.encode(texts), rejects, time.perf_counter() - t0)
        plan = FlatPlan()
        ids, index, starts, ends = [], [], [], []
        for r in rows:
            part = plan.add_document(r.text)
            if not part.count:
                rejects.append(
                    Reject(
                        r.id,
                        NO_SENTENCES,
                        "the document has no sentence to score",
                        r.source,
                        r.row,
                        r.line,
                        preview(r.text),
                    )
                )
            for i, s in enumerate(part.sentences or []):
                ids.append(r.id)
                index.append(i)
                starts.append(s.start)
                ends.append(s.end)
        encoded = self.clf.encode(plan.texts, plan.contexts)
        return Prepared(ids, plan.texts, encoded, rejects, time.perf_counter() - t0, index, starts, ends)

    def run(self, prepared: Prepared, timings: Timings | None = None) -> Result:
        return self.clf.classify_encoded(
            prepared.encoded, self.batch_size, max_tokens=self.max_tokens, timings=timings
        )

    def table(self, prepared: Prepared, result: Result) -> pa.Table:
        return build_table(
            self.schema,
            prepared.ids,
            result,
            self.model_name,
            self.model_version,
            sentence_index=prepared.sentence_index,
            starts=prepared.starts,
            ends=prepared.ends,
            texts=prepared.texts,
        )
