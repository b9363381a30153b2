"""What a scoring job is: its options, and the error every user-facing failure is raised as."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sitrep.models.runtime import DEFAULT_RUNTIME

INPUT_FORMATS = ("auto", "jsonl", "csv", "parquet")
OUTPUT_FORMATS = ("parquet", "jsonl")
DEFAULT_CHUNK_ROWS = 8192
# Sentences per model call when --batch-size is not given: small calls win on CPU, a GPU wants big ones
# (the measurements: sitrep/scoring/README.md, "Results").
CPU_BATCH_SIZE = 32
GPU_BATCH_SIZE = 256


def default_batch_size(on_gpu: bool) -> int:
    return GPU_BATCH_SIZE if on_gpu else CPU_BATCH_SIZE


class ScoreError(RuntimeError):
    """A job cannot start or resume: bad input, a changed input on resume, an unusable output folder."""


@dataclass(frozen=True)
class ScoreOptions:
    """One `sitrep score` job. Fields marked (fingerprint) must match when a job is resumed."""

    bundle: Path
    input: str  # a file, a directory or a glob
    output: Path  # a directory of shards
    id_column: str = "id"  # (fingerprint)
    text_column: str = "text"  # (fingerprint)
    input_format: str = "auto"  # (fingerprint) auto = from each file's suffix
    output_format: str = "parquet"  # (fingerprint)
    documents: bool = False  # (fingerprint) split each text into sentences with offsets
    include_text: bool = False  # (fingerprint) add the scored (sentence) text as a column
    runtime: str = DEFAULT_RUNTIME  # (fingerprint)
    device: str | None = None  # (fingerprint) torch runtime only: cpu / cuda / cuda:1
    chunk_rows: int = DEFAULT_CHUNK_ROWS  # (fingerprint) input rows per committed shard
    batch_size: int | None = None  # None: default_batch_size() for where the model runs
    max_tokens: int | None = None  # padded tokens per model batch (caps GPU memory on long texts)
    tokenize_workers: int | None = None  # threads that split + tokenize ahead of the model
    threads: int | None = None  # ONNX Runtime / torch intra-op threads
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.input_format not in INPUT_FORMATS:
            raise ScoreError(
                f"--input-format must be one of {', '.join(INPUT_FORMATS)}, not {self.input_format!r}"
            )
        if self.output_format not in OUTPUT_FORMATS:
            raise ScoreError(
                f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}, not {self.output_format!r}"
            )
        if self.chunk_rows < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ScoreError("--chunk-rows and --batch-size must be at least 1")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ScoreError("--max-tokens must be at least 1")
        if self.tokenize_workers is not None and self.tokenize_workers < 1:
            raise ScoreError("--tokenize-workers must be at least 1")
        if not self.id_column or not self.text_column:
            raise ScoreError("--id-column and --text-column must not be empty")

    def fingerprint(self) -> dict[str, object]:
        """The options that change what the output contains (a resumed job must use the same)."""
        return {
            "id_column": self.id_column,
            "text_column": self.text_column,
            "input_format": self.input_format,
            "output_format": self.output_format,
            "documents": self.documents,
            "include_text": self.include_text,
            "runtime": self.runtime,
            "device": self.device,
            "chunk_rows": self.chunk_rows,
        }
