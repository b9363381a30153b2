"""The baseline every transformer must beat: character n-gram TF-IDF + one-vs-rest logistic regression.

`sitrep train --arch tfidf -o DIR` writes DIR/tfidf.joblib (the scikit-learn pipeline) and
DIR/tfidf.json (name, version, thresholds tuned on dev, dev/test/zeroshot scores). Thresholds are
tuned on dev exactly like the transformer's (per label, F1-maximising), so the comparison is fair.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from sitrep.models.corpus import label_matrix, read_examples, read_many
from sitrep.models.labels import LABELS
from sitrep.models.tfidf import META_FILE, MODEL_FILE, TfidfModel
from sitrep.training.calibrate import fit_thresholds
from sitrep.training.train import score_examples


def build_pipeline(seed: int) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2, max_features=300_000),
        OneVsRestClassifier(LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000, random_state=seed)),
    )


def train_tfidf(
    out: Path,
    train_file: str | list[str] = "data/train.jsonl",
    dev_file: str | list[str] = "data/dev.jsonl",
    eval_files: dict[str, str] | None = None,
    train_langs: list[str] | None = None,
    seed: int = 13,
) -> TfidfModel:
    import joblib

    eval_files = eval_files if eval_files is not None else {"test": "data/test.jsonl", "zeroshot": "data/zeroshot.jsonl"}
    train = read_many(train_file, train_langs)
    dev = read_many(dev_file, train_langs)  # thresholds are tuned here
    pipeline = build_pipeline(seed)
    pipeline.fit([e.text for e in train], label_matrix(train))
    dev_probs = np.asarray(pipeline.predict_proba([e.text for e in dev]), dtype=np.float32)
    thresholds = fit_thresholds(dev_probs, label_matrix(dev))
    cut = [thresholds[k] for k in LABELS]
    scores = {"dev": score_examples(dev_probs, dev, cut)}
    for split, path in eval_files.items():
        if Path(path).exists():
            ex = read_examples(path)
            probs = np.asarray(pipeline.predict_proba([e.text for e in ex]), dtype=np.float32)
            scores[split] = score_examples(probs, ex, cut)
    meta = {
        "kind": "tfidf",
        "name": "tfidf-baseline",
        "version": dt.datetime.now(dt.UTC).strftime("%Y.%m.%d-%H%M%S"),
        "labels": list(LABELS),
        "thresholds": thresholds,
        "train_langs": sorted({e.lang for e in train}),
        "n_train": len(train),
        "scores": scores,
    }
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, out / MODEL_FILE)
    (out / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return TfidfModel(pipeline, meta)
