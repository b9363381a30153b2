"""What eval scores: anything that maps texts to calibrated per-label probabilities and labels.

Two kinds plug in today, picked from what the directory holds:

- a transformer model bundle (``manifest.json``): predictions come only from
  ``models.runtime.load(bundle, runtime).classify(texts)`` — tokenization, calibration and the
  bundle's thresholds are the runtime's, never re-done here;
- the TF-IDF baseline written by ``sitrep train --arch tfidf`` (``tfidf.json``), through
  ``models.tfidf.load_tfidf``; its runtime is reported as ``sklearn``.

``EnsemblePredictor`` averages several of them (``sitrep eval … --ensemble``): an analysis of what N models'
cost would buy, not something the service runs.
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


class EnsemblePredictor:
    """Several models averaged: each sentence's probability of a label is the mean of the members' calibrated
    probabilities, and the label is given where that mean reaches the mean of the members' thresholds for it.

    An analysis tool (`sitrep eval BUNDLE --ensemble OTHER …`): it measures what more capacity at inference
    (N models' cost) would buy on a data set; nothing serves an ensemble. With the calibrated threshold rule every
    member's thresholds are 0.5, so the mean probability is compared with 0.5.
    """

    kind = "ensemble"

    def __init__(self, members: list[Predictor]) -> None:
        if len(members) < 2:
            raise PredictorError("an ensemble needs at least two models")
        runtimes = sorted({m.runtime for m in members})
        self.members = members
        self.name = " + ".join(m.name for m in members)
        self.version = " + ".join(m.version for m in members)
        self.runtime = runtimes[0] if len(runtimes) == 1 else "+".join(runtimes)
        self.thresholds = {label: float(np.mean([m.thresholds[label] for m in members])) for label in LABELS}
        self.parity: dict[str, Any] | None = None  # each member's parity is its own bundle's

    def predict(self, texts: list[str], contexts: list[str] | None = None) -> Predictions:
        preds = [m.predict(texts, contexts) for m in self.members]
        probs = np.mean([p.probs for p in preds], axis=0).astype(np.float32)
        cut = np.asarray([self.thresholds[label] for label in LABELS], dtype=np.float32)
        labels = [[label for label, on in zip(LABELS, row, strict=True) if on] for row in probs >= cut]
        reported = [p.truncated for p in preds if p.truncated]  # a TF-IDF member truncates nothing and says so
        truncated = [any(flags) for flags in zip(*reported, strict=True)] if reported else []
        return Predictions(probs.reshape(len(texts), len(LABELS)), labels, truncated)


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
