"""What eval scores: anything that maps texts to calibrated per-label probabilities and labels.

Two kinds plug in today, picked from what the directory holds:

- a transformer model bundle (``manifest.json``): predictions come only from
  ``models.runtime.load(bundle, runtime).classify(texts)`` — tokenization, calibration and the
  bundle's thresholds are the runtime's, never re-done here;
- the TF-IDF baseline written by ``sitrep train --arch tfidf`` (``tfidf.json``), through
  ``models.tfidf.load_tfidf``; its runtime is reported as ``sklearn``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from sitrep.models.labels import LABELS


class PredictorError(RuntimeError):
    """The path holds no model eval can load, or its runtime cannot run here."""


@dataclass
class Predictions:
    probs: np.ndarray  # [n, len(LABELS)] float32
    labels: list[list[str]]
    truncated: list[bool] = field(default_factory=list)  # empty where the predictor does not truncate


class Predictor(Protocol):
    name: str
    version: str
    kind: str  # "bundle" | "tfidf"
    runtime: str
    thresholds: dict[str, float]

    def predict(self, texts: list[str], contexts: list[str] | None = None) -> Predictions: ...


class BundlePredictor:
    """A transformer bundle through the one inference core."""

    kind = "bundle"

    def __init__(self, path: Path, runtime: str, threads: int | None = None, progress: bool = False) -> None:
        from sitrep.models.bundle import BundleError
        from sitrep.models.runtime import RuntimeUnavailable, load

        try:
            self.classifier = load(path, runtime, threads=threads)
        except (BundleError, RuntimeUnavailable, ValueError) as exc:
            raise PredictorError(str(exc)) from exc
        bundle = self.classifier.bundle
        self.name, self.version, self.runtime = bundle.name, bundle.version, runtime
        self.thresholds = dict(zip(bundle.labels, bundle.thresholds, strict=True))
        self.progress = progress
        # this runtime's row of the export parity report (agreement with torch), if the bundle has one
        parity = (bundle.manifest.export.get("parity") or {}).get(runtime)
        keep = ("label_agreement", "max_abs_prob_diff", "macro_f1_delta", "passed", "recipe")
        self.parity: dict[str, Any] | None = {k: parity.get(k) for k in keep} if parity else None

    def predict(self, texts: list[str], contexts: list[str] | None = None, chunk: int = 256) -> Predictions:
        """`contexts`: each text's previous sentence in its article ("" for none), read by bundles trained with it."""
        # Chunks only drive the progress bar: the runtime keeps input order within each call.
        probs, labels, truncated = [], [], []
        starts = range(0, len(texts), chunk)
        for start in tqdm(
            starts,
            desc=f"classify ({self.runtime})",
            unit="chunk",
            disable=not self.progress,
            dynamic_ncols=True,
        ):
            result = self.classifier.classify(
                texts[start : start + chunk], contexts=None if contexts is None else contexts[start : start + chunk]
            )
            probs.append(result.probs)
            labels.extend(result.labels)
            truncated.extend(result.truncated)
        stacked = np.concatenate(probs) if probs else np.zeros((0, len(LABELS)), dtype=np.float32)
        return Predictions(stacked, labels, truncated)


class TfidfPredictor:
    """The character n-gram TF-IDF baseline (fitted by sitrep/training/tfidf.py, loaded by sitrep/models/tfidf.py)."""

    kind = "tfidf"
    runtime = "sklearn"

    def __init__(self, path: Path) -> None:
        from sitrep.models.tfidf import load_tfidf

        try:
            self.model = load_tfidf(path)
        except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
            raise PredictorError(f"{path}: cannot load the TF-IDF baseline: {exc}") from exc
        self.name, self.version = self.model.name, self.model.version
        self.thresholds = dict(zip(LABELS, self.model.thresholds, strict=True))
        self.parity: dict[str, Any] | None = None  # one runtime: nothing to compare

    def predict(self, texts: list[str], contexts: list[str] | None = None) -> Predictions:
        probs, labels = self.model.predict(texts)  # sentences alone: the baseline reads no context
        return Predictions(np.asarray(probs, dtype=np.float32), labels)


def load_predictor(
    path: str | Path, runtime: str = "onnx-int8", threads: int | None = None, progress: bool = False
) -> Predictor:
    """A bundle (manifest.json) or a TF-IDF baseline directory (tfidf.json); `runtime` applies to bundles."""
    from sitrep.models.bundle import MANIFEST

    root = Path(path)
    if not root.is_dir():
        raise PredictorError(f"{root} does not exist or is not a directory")
    if (root / MANIFEST).is_file():
        return BundlePredictor(root, runtime, threads=threads, progress=progress)
    from sitrep.models.tfidf import is_tfidf

    if is_tfidf(root):
        return TfidfPredictor(root)
    raise PredictorError(
        f"{root} is neither a model bundle (no {MANIFEST}; `sitrep train`) nor a TF-IDF baseline "
        "(no tfidf.json; `sitrep train --arch tfidf`)"
    )
