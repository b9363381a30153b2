"""Training configuration: a TOML file, then command-line overrides, into one dataclass."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# Autocast of the training steps (`train.amp_dtype` maps each to a dtype on the device at hand).
MIXED_PRECISION = ("auto", "bf16", "fp16", "none")
CONTEXTS = ("none", "previous")


def check_dropout(p: float, where: str) -> None:
    """A dropout probability (`dropout` in a config, `sitrep bench train-step --dropouts`): at least 0, below 1."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{where}: dropout {p} must be at least 0 and below 1")


@dataclass
class TrainConfig:
    base_model: str = "multilingual-e5-small"  # bundled alias, a local folder, or a hub name
    train_file: str | list[str] = "data/train.jsonl"  # one file or several (their sentences are pooled)
    dev_file: str | list[str] = "data/dev.jsonl"  # early stopping
    calibration_file: str | list[str] | None = None  # Platt calibration + thresholds; default: dev_file
    # How the per-label thresholds are set on the calibration file (sitrep/training/calibrate.py): "f1" (each
    # label's F1 maximum) or "calibrated" (0.5 on the calibrated probability).
    threshold_rule: str = "f1"
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
    # Also freeze the whole embedding block and the encoder's first N layers: backward stops above them
    # (less compute per step); 0 = train every layer.
    freeze_layers: int = 0
    # With freeze_layers: run the frozen bottom once per training sentence and train on its cached output
    # (sitrep/training/frozen_prefix.py; no dropout inside the frozen layers). False = run it every step.
    cache_frozen: bool = False
    pooling: str = "cls"  # "cls": the library's head on the first token; "mean": mean over tokens
    # Every dropout of the model (hidden states, attention probabilities, the head) set to this probability while it
    # trains; None keeps the base encoder's own (0.1 for multilingual-e5-small). Inference never drops anything.
    dropout: float | None = None
    # Document context: "previous" gives an article sentence its article's previous sentence as a second segment
    # (models/encoding.py), in training and wherever the bundle is run on documents; "none": each sentence alone.
    context: str = "none"
    # A contrastive first stage (SetFit-style, sitrep/training/contrastive.py) on in-batch sentence pairs
    # before the classifier is trained; 0 = none.
    contrastive_steps: int = 0
    contrastive_batch_size: int = 32
    contrastive_lr: float = 2e-5
    contrastive_length_buckets: bool = True  # batches of similar-length sentences (less padding)
    patience: int = 2  # epochs without a dev macro-F1 gain before stopping early
    eval_every_steps: int | None = None  # default: once per epoch
    threads: int | None = None
    # auto: bf16 on CUDA when supported, else fp16; on a CPU bf16 where it is native (AVX512-BF16/AMX), else none.
    # Only the training steps: on a CPU the dev evaluations and calibration stay fp32 (`train.amp_dtype`).
    mixed_precision: str = "auto"  # one of MIXED_PRECISION
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
        cfg = cls(**data)
        from sitrep.training.calibrate import THRESHOLD_RULES

        if cfg.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"{path or 'config'}: threshold_rule {cfg.threshold_rule!r} is not one of "
                             f"{', '.join(THRESHOLD_RULES)}")
        if cfg.context not in CONTEXTS:
            raise ValueError(f"{path or 'config'}: context {cfg.context!r} is not one of {', '.join(CONTEXTS)}")
        if cfg.dropout is not None:
            check_dropout(cfg.dropout, str(path or "config"))
        if cfg.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"{path or 'config'}: mixed_precision {cfg.mixed_precision!r} is not one of "
                             f"{', '.join(MIXED_PRECISION)}")
        return cfg

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def files(value: str | list[str] | None) -> list[str]:
        """A file option as a list (a config may give one path or several)."""
        if value is None:
            return []
        return [value] if isinstance(value, str) else list(value)

    @property
    def train_files(self) -> list[str]:
        return self.files(self.train_file)

    @property
    def dev_files(self) -> list[str]:
        return self.files(self.dev_file)

    @property
    def calibration_files(self) -> list[str]:
        return self.files(self.calibration_file) or self.dev_files
