"""`sitrep soup`: average the weights of several fine-tuned bundles into one model (a model soup).

Wortsman et al. (2022): models fine-tuned from the same pretrained weights with different seeds lie in
one basin, and the average of their weights is often better than each of them, at the cost of one
model. Two ways of choosing the ingredients, both on dev only:

- ``uniform``: average all of them;
- ``greedy``: sort by the bundles' own dev macro-F1, start from the best, and add the next one only
  if the soup's dev macro-F1 (at tuned thresholds, as training selects checkpoints) does not drop.

The soup is then calibrated and scored like a freshly trained model (`train.finish_bundle`), with the
best ingredient's training config; the manifest records the ingredients and every trial.
"""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from sitrep.models.bundle import Bundle, Calibration, load_bundle
from sitrep.models.calibration import calibrated_probs
from sitrep.models.scores import tuned_macro_f1
from sitrep.training.config import TrainConfig
from sitrep.training.train import Trainer, TrainingError, finish_bundle, prepare_out, read_splits

METHODS = ("greedy", "uniform")
# What every ingredient must share for their weights to be averaged meaningfully.
SAME = ("base_model", "pooling", "max_length", "context")


def _config(bundle: Bundle) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in bundle.manifest.training.get("config", {}).items() if k in known})


def _dev_f1(bundle: Bundle) -> float:
    return float(bundle.manifest.scores.get("dev", {}).get("macro_f1", float("nan")))


def check_ingredients(bundles: list[Bundle]) -> list[TrainConfig]:
    """Their configs; raises TrainingError unless they share base model, pooling, length, document context and
    labels."""
    if len(bundles) < 2:
        raise TrainingError("a soup needs at least two bundles")
    configs = [_config(b) for b in bundles]
    for b, cfg in zip(bundles[1:], configs[1:], strict=True):
        for key in SAME:
            if getattr(cfg, key) != getattr(configs[0], key):
                raise TrainingError(f"{b.path}: {key} {getattr(cfg, key)!r} differs from {bundles[0].path}'s "
                                    f"{getattr(configs[0], key)!r}; only models fine-tuned from the same start "
                                    "can be averaged")
        if b.labels != bundles[0].labels:
            raise TrainingError(f"{b.path}: labels {b.labels} differ from {bundles[0].path}'s")
        if not (b.hf_dir / "model.safetensors").is_file():
            raise TrainingError(f"{b.path}: no hf/model.safetensors to average")
    return configs


def average(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise mean of state dicts with the same keys (integer buffers are taken from the first)."""
    import torch

    return {key: torch.stack([s[key].float() for s in states]).mean(dim=0).to(first.dtype)
            if first.is_floating_point() else first.clone() for key, first in states[0].items()}


def soup(paths: list[str | Path], out: Path, method: str = "greedy", name: str | None = None,
         force: bool = False, threads: int | None = None, progress: bool = True,
         log: Any = print) -> Path:
    """Average the bundles at `paths` into a new bundle at `out`. Returns its path."""
    from safetensors.torch import load_file

    if method not in METHODS:
        raise TrainingError(f"unknown soup method {method!r}; choose one of {', '.join(METHODS)}")
    bundles = sorted((load_bundle(p) for p in paths), key=_dev_f1, reverse=True)
    configs = check_ingredients(bundles)
    cfg = configs[0]
    cfg.name = name or f"{cfg.name}-soup"
    cfg.version = None
    cfg.threads = threads or cfg.threads
    cfg.contrastive_steps = 0
    out = prepare_out(out, force)
    t0 = time.perf_counter()
    train_ex, dev_ex, calib_ex, data_hash = read_splits(cfg)
    trainer = Trainer(cfg, out)
    states = [load_file(str(b.hf_dir / "model.safetensors")) for b in bundles]
    model_keys = set(trainer.model.state_dict())
    for b, state in zip(bundles, states, strict=True):
        if set(state) != model_keys:
            raise TrainingError(f"{b.path}: its weights do not match the architecture of {cfg.base_model}")
    dev_ids, dev_y = trainer.encode(dev_ex)

    def dev_f1(members: list[int]) -> float:
        trainer.model.load_state_dict(average([states[i] for i in members]))
        probs = calibrated_probs(trainer.predict_logits(dev_ids), Calibration())
        return tuned_macro_f1(probs, dev_y.astype(np.int64))

    trials: list[dict[str, Any]] = []
    if method == "uniform":
        kept = list(range(len(bundles)))
        trials.append({"members": [str(b.path) for b in bundles], "dev_macro_f1": round(dev_f1(kept), 4)})
    else:
        kept = [0]
        best = dev_f1(kept)
        trials.append({"members": [str(bundles[0].path)], "dev_macro_f1": round(best, 4)})
        for i in range(1, len(bundles)):
            f1 = dev_f1([*kept, i])
            keep = f1 >= best
            trials.append({"members": [str(bundles[j].path) for j in [*kept, i]], "dev_macro_f1": round(f1, 4),
                           "kept": keep})
            log(f"soup + {bundles[i].path}: dev macro-F1 {f1:.4f} ({'kept' if keep else 'dropped'}; best {best:.4f})")
            if keep:
                kept, best = [*kept, i], f1
    trainer.model.load_state_dict(average([states[i] for i in kept]))
    record = {
        "method": method,
        "ingredients": [{"path": str(b.path), "name": b.manifest.name, "version": b.manifest.version,
                         "seed": c.seed, "dev_macro_f1": _dev_f1(b)} for b, c in zip(bundles, configs, strict=True)],
        "kept": [str(bundles[i].path) for i in kept],
        "trials": trials,
    }
    result = {"steps": 0, "best": {"macro_f1": trials[-1]["dev_macro_f1"] if method == "uniform" else best},
              "history": trials}
    return finish_bundle(trainer, cfg, out, train_ex, dev_ex, calib_ex, data_hash, result, t0, {"soup": record})
