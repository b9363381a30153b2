"""Session fixtures: the tiny model, a small corpus slice, a trained + exported tiny bundle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny_model import MAX_LENGTH, build_tiny_base, subset

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_base(tmp_path_factory.mktemp("tiny-base"), DATA)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tiny-data")
    return {
        "train": subset(DATA / "train.jsonl", d / "train.jsonl", 240),
        "dev": subset(DATA / "dev.jsonl", d / "dev.jsonl", 90),
        "test": subset(DATA / "test.jsonl", d / "test.jsonl", 60),
        "zeroshot": subset(DATA / "zeroshot.jsonl", d / "zeroshot.jsonl", 60),
    }


def tiny_config(tiny_base: Path, tiny_data: dict[str, Path], **overrides):
    from sitrep.training.config import TrainConfig

    values = dict(
        base_model=str(tiny_base), train_file=str(tiny_data["train"]), dev_file=str(tiny_data["dev"]),
        eval_files={"test": str(tiny_data["test"]), "zeroshot": str(tiny_data["zeroshot"])},
        name="tiny", version="0.0.1", max_length=MAX_LENGTH, epochs=8, batch_size=16, lr=3e-3, head_lr=3e-3,
        freeze_embeddings=False, patience=5, threads=2, device="cpu",
        # fp32 steps whatever the CPU (`auto` picks bf16 where it is native): the tiny model, and so every figure the
        # tests check on it, is then the same on every machine; bf16 training has its own tests.
        mixed_precision="none",
    )
    values.update(overrides)
    return TrainConfig(**values)


def tiny_gates():
    """The int8 gate for the tiny fixture model. A 32-wide random encoder trained for a few steps keeps
    many probabilities near its thresholds, so int8 flips more of its labels than it does on a real
    model; the production gate (Gates(): >= 99% agreement, <= 0.5 point) is tested on its own."""
    from sitrep.training.export import Gates

    return Gates(int8_min_agreement=0.6, int8_max_f1_drop=0.5)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, tiny_data: dict[str, Path]) -> Path:
    """A tiny bundle, trained for a few steps and exported (fp32, int8, fp16). Tests must not modify it."""
    from sitrep.training.export import export
    from sitrep.training.train import train

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    train(tiny_config(tiny_base, tiny_data), out, progress=False)
    export(out, data=tiny_data["dev"], gates=tiny_gates(), log=lambda *_: None)
    return out

