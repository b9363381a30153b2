"""The TF-IDF baseline at inference: load what `sitrep train --arch tfidf` wrote and predict with it.

DIR/tfidf.joblib is the scikit-learn pipeline (character n-gram TF-IDF + one-vs-rest logistic
regression); DIR/tfidf.json holds its name, version, thresholds tuned on dev and its scores. Fitting
lives in sitrep/training/tfidf.py; eval and the benchmarks only load and predict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sitrep.models.calibration import labels_above
from sitrep.models.labels import LABELS

MODEL_FILE = "tfidf.joblib"
META_FILE = "tfidf.json"


@dataclass
class TfidfModel:
    """A trained baseline: `predict(texts)` gives per-label probabilities and labels at its thresholds."""

    pipeline: Any
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def version(self) -> str:
        return self.meta["version"]

    @property
    def thresholds(self) -> list[float]:
        return [self.meta["thresholds"][label] for label in LABELS]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(texts), dtype=np.float32)

    def predict(self, texts: list[str]) -> tuple[np.ndarray, list[list[str]]]:
        probs = self.predict_proba(texts)
        return probs, labels_above(probs, self.thresholds)


def load_tfidf(path: str | Path) -> TfidfModel:
    import joblib

    root = Path(path)
    if not (root / META_FILE).exists():
        raise FileNotFoundError(f"{root} is not a TF-IDF baseline (no {META_FILE}); build one with "
                                "`sitrep train --arch tfidf`")
    return TfidfModel(joblib.load(root / MODEL_FILE), json.loads((root / META_FILE).read_text()))


def is_tfidf(path: str | Path) -> bool:
    return (Path(path) / META_FILE).exists()
