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
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, tiny_data: dict[str, Path]) -> Path:
    """A tiny bundle, trained for a few steps and exported (fp32, int8, fp16). Tests must not modify it."""
    from sitrep.training.export import Gates, export
    from sitrep.training.train import train

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    train(tiny_config(tiny_base, tiny_data), out, progress=False)
    # The tiny model learns next to nothing (since mean pooling, its logits barely move between sentences, its
    # Platt slope is ~0.02 and every dev probability lies within ~1e-4 of the others): int8 rounding (1e-5) then
    # flips labels on a third of the dev sentences whatever the thresholds, and no recipe can pass the real gate
    # (0.99 agreement). The session bundle only has to exercise the plumbing, so its export gate is open;
    # tests/test_training_export.py checks the gates themselves.
    export(out, data=tiny_data["dev"], gates=Gates(int8_min_agreement=0.0, int8_max_f1_drop=1.0), log=lambda *_: None)
    return out

