"""Training configuration: a TOML file, then command-line overrides, into one dataclass."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    base_model: str = "multilingual-e5-small"  # bundled alias, a local folder, or a hub name
    train_file: str = "data/train.jsonl"
    dev_file: str = "data/dev.jsonl"
    eval_files: dict[str, str] = field(
        default_factory=lambda: {"test": "data/test.jsonl", "zeroshot": "data/zeroshot.jsonl"}
    )
    train_langs: list[str] | None = None  # None = every language in the train file
    name: str = "sitrep"
    version: str | None = None  # default: a UTC timestamp
    seed: int = 13
    max_length: int = 128
    epochs: int = 4
    max_steps: int | None = None  # stop after this many optimizer steps (smoke tests)
    lr: float = 6e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    batch_size: int = 16
    grad_accum: int = 1
    eval_batch_size: int = 64
    freeze_embeddings: bool = True  # keeps the multilingual word embeddings intact (zero-shot transfer)
    patience: int = 2  # epochs without a dev macro-F1 gain before stopping early
    eval_every_steps: int | None = None  # default: once per epoch
    threads: int | None = None
    mixed_precision: str = "auto"  # auto: bf16 on CUDA when supported, else fp16 on CUDA, none on CPU
    device: str | None = None  # default: cuda if available

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
        data: dict[str, Any] = {}
        if path is not None:
            with Path(path).open("rb") as f:
                data = tomllib.load(f)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown config keys {unknown}; known keys: {sorted(known)}")
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
