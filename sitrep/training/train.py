"""`sitrep train`: fine-tune a multilingual encoder for multi-label classification into a bundle.

Sigmoid outputs with BCE loss (never a softmax: labels are independent). Length-bucketed batches,
AdamW with linear warmup, early stopping on dev macro-F1 (at per-label tuned thresholds), a checkpoint after every evaluation so
`--resume` continues an interrupted run, bf16/fp16 autocast on CUDA and bf16 on a CPU that computes it natively
(`amp_dtype`). After training, on dev: per-label Platt calibration and F1-maximising thresholds. The result is a model bundle.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sitrep.models.base_encoder import resolve_base
from sitrep.models.bundle import HF_DIR, Calibration, Manifest, sha256_files, write_bundle_manifest
from sitrep.models.calibration import calibrated_probs, decisions
from sitrep.models.corpus import Example, label_matrix, read_examples, read_many
from sitrep.models.cpu import has_bf16
from sitrep.models.encoding import Encoded, TextEncoder
from sitrep.models.labels import LABELS
from sitrep.models.runtime import TorchBackend, batched_logits
from sitrep.models.scores import macro_f1, split_summary, tuned_macro_f1
from sitrep.training.calibrate import calibrate
from sitrep.training.config import MIXED_PRECISION, TrainConfig
from sitrep.training.frozen_prefix import FrozenPrefix, forward_batch, prefix_logits

CHECKPOINT_DIR = "checkpoint"


class TrainingError(RuntimeError):
    pass


def amp_dtype(device_type: str, mode: str) -> Any:
    """The autocast dtype of training steps on `device_type` for `mixed_precision` = `mode` (None: fp32).

    "auto": on CUDA bf16 where supported, else fp16; on a CPU bf16 where it computes bf16 natively (AVX512-BF16,
    AMX: `cpu.has_bf16`), where a step runs about twice as fast as in fp32, else fp32 (PyTorch would emulate bf16).
    "bf16" asks for it anywhere; "fp16" only on CUDA (PyTorch's CPU autocast has no fp16 training path here).
    """
    import torch

    if mode not in MIXED_PRECISION:
        raise TrainingError(f"mixed_precision {mode!r}: choose one of {', '.join(MIXED_PRECISION)}")
    if mode == "none":
        return None
    if device_type == "cuda":
        if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16
        return torch.bfloat16
    if mode == "fp16":
        raise TrainingError("mixed_precision 'fp16' needs a CUDA device; on a CPU use 'bf16' or 'none'")
    return torch.bfloat16 if mode == "bf16" or has_bf16() else None


def classifier_loss(model: Any, encoder: TextEncoder, ids: list[np.ndarray], idx: np.ndarray, targets: Any,
                    device: Any, prefix: FrozenPrefix | None, amp_dtype: Any) -> Any:
    """The BCE loss of training rows `idx` (`targets`: their label rows), the forward pass under autocast to
    `amp_dtype` (None: fp32) and the loss in fp32: the step `Trainer.fit` repeats and `sitrep bench train-step` times."""
    import torch

    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = forward_batch(model, encoder, ids, idx, device, prefix)[0].logits
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets)


def dropout_modules(model: Any) -> list[Any]:
    """`model`'s dropout modules: the encoder's hidden and attention dropouts and the head's all read their
    module's `p` when they run, so setting it sets the probability."""
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]


def set_dropout(model: Any, p: float) -> None:
    """Set every dropout of `model` to probability `p`."""
    for m in dropout_modules(model):
        m.p = p


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_batches(lengths: np.ndarray, batch_size: int, seed: int) -> list[np.ndarray]:
    """Shuffled batches of similar length: shuffle, sort within pools of 32 batches, shuffle batches."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(lengths))
    pool = batch_size * 32
    batches: list[np.ndarray] = []
    for start in range(0, len(perm), pool):
        chunk = perm[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def score_examples(
    probs: np.ndarray, examples: list[Example], thresholds: list[float]
) -> dict[str, Any]:
    """Macro/per-label/per-language F1 of calibrated probabilities at the given thresholds."""
    return split_summary(label_matrix(examples), decisions(probs, thresholds), [e.lang for e in examples])


class Trainer:
    def __init__(self, cfg: TrainConfig, out: Path) -> None:
        import torch
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        from sitrep.models.torch_model import load_classifier

        hf_logging.set_verbosity_error()
        self.torch = torch
        self.cfg = cfg
        self.out = out
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.base = resolve_base(cfg.base_model)
        hf_out = out / HF_DIR
        hf_out.mkdir(parents=True, exist_ok=True)
        AutoTokenizer.from_pretrained(self.base).save_pretrained(hf_out)
        if not (hf_out / "tokenizer.json").exists():
            raise TrainingError(f"{self.base} has no fast tokenizer (tokenizer.json); sitrep needs one")
        self.encoder = TextEncoder(hf_out / "tokenizer.json", cfg.max_length)
        self.model = load_classifier(
            self.base,
            pooling=cfg.pooling,
            num_labels=len(LABELS),
            problem_type="multi_label_classification",
            id2label=dict(enumerate(LABELS)),
            label2id={k: i for i, k in enumerate(LABELS)},
        ).to(self.device)
        if cfg.dropout is not None:
            set_dropout(self.model, cfg.dropout)
        if cfg.freeze_embeddings:
            self.model.get_input_embeddings().weight.requires_grad_(False)
        if cfg.freeze_layers:
            body = getattr(self.model, self.model.base_model_prefix)
            layers = body.encoder.layer
            if not 0 < cfg.freeze_layers < len(layers):
                raise TrainingError(f"freeze_layers {cfg.freeze_layers}: the encoder has {len(layers)} layers; "
                                    f"freeze between 1 and {len(layers) - 1} of them")
            for module in (body.embeddings, *layers[: cfg.freeze_layers]):
                module.requires_grad_(False)
        if cfg.cache_frozen and not cfg.freeze_layers:
            raise TrainingError("cache_frozen caches the frozen layers' output: set freeze_layers (1 or more) too")
        self.frozen = {n for n, p in self.model.named_parameters() if not p.requires_grad}
        # Training steps run under this autocast dtype (None: fp32). On CUDA the evaluations do too; on a CPU they
        # stay fp32, so that the dev logits that fit calibration are the ones the exported model reproduces.
        self.amp_dtype = amp_dtype(self.device.type, cfg.mixed_precision)
        self.eval_amp_dtype = self.amp_dtype if self.device.type == "cuda" else None

    # --- data ---------------------------------------------------------------------------------
    def encode(self, examples: list[Example]) -> tuple[Encoded, np.ndarray]:
        contexts = [e.context for e in examples] if self.cfg.context == "previous" else None
        return self.encoder.encode([e.text for e in examples], contexts), label_matrix(examples).astype(np.float32)

    def predict_logits(self, encoded: Encoded) -> np.ndarray:
        """Dev/test logits through the runtime's batching, on the model being trained."""
        backend = TorchBackend.wrap(self.model, self.device, self.eval_amp_dtype)
        return batched_logits(self.encoder, backend, encoded, self.cfg.eval_batch_size)

    # --- checkpoints --------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, Any]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items() if k not in self.frozen}

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        ckpt = self.out / CHECKPOINT_DIR
        ckpt.mkdir(exist_ok=True)
        tmp = ckpt / "state.pt.tmp"
        self.torch.save(state, tmp)
        os.replace(tmp, ckpt / "state.pt")

    def load_checkpoint(self) -> dict[str, Any] | None:
        path = self.out / CHECKPOINT_DIR / "state.pt"
        if not path.exists():
            return None
        return self.torch.load(path, map_location="cpu", weights_only=False)

    # --- the loop -----------------------------------------------------------------------------
    def frozen_prefix(self, ids: list[np.ndarray], progress: bool) -> FrozenPrefix | None:
        """The frozen bottom's output for `ids`, computed once, when the config asks for it."""
        if not (self.cfg.cache_frozen and self.cfg.freeze_layers):
            return None
        return FrozenPrefix(self.model, self.cfg.freeze_layers, self.encoder, ids, self.device,
                            self.cfg.eval_batch_size, progress)

    def fit(self, train: list[Example], dev: list[Example], resume: bool, progress: bool,
            prefix: FrozenPrefix | None = None, encoded: tuple[Encoded, np.ndarray] | None = None) -> dict[str, Any]:
        """Train. `encoded`: `self.encode(train)` when the caller already has it; `prefix`, when given, holds the
        frozen bottom's output for `train` (same order)."""
        torch, cfg = self.torch, self.cfg
        train_encoded, train_y = encoded if encoded is not None else self.encode(train)
        train_ids = train_encoded.ids
        dev_ids, dev_y = self.encode(dev)
        # With the frozen bottom cached for training, the dev evaluations start from a cache of their own.
        dev_prefix = self.frozen_prefix(dev_ids.ids, progress) if prefix is not None else None
        lengths = np.asarray([len(x) for x in train_ids])
        n_batches = math.ceil(len(train_ids) / cfg.batch_size)
        steps_per_epoch = max(1, n_batches // cfg.grad_accum)
        total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
        eval_every = cfg.eval_every_steps or steps_per_epoch

        head = [p for n, p in self.model.named_parameters() if p.requires_grad and n.startswith("classifier")]
        body_decay, body_no_decay = [], []
        for n, p in self.model.named_parameters():
            if not p.requires_grad or n.startswith("classifier"):
                continue
            (body_no_decay if (p.ndim == 1 or "LayerNorm" in n) else body_decay).append(p)
        optimizer = torch.optim.AdamW(
            [
                {"params": body_decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
                {"params": body_no_decay, "lr": cfg.lr, "weight_decay": 0.0},
                {"params": head, "lr": cfg.head_lr, "weight_decay": 0.0},
            ]
        )
        warmup = int(total_steps * cfg.warmup_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup)),
        )
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        step, epoch, batch_in_epoch = 0, 0, 0
        best = {"macro_f1": -1.0, "step": 0, "epoch": 0}
        best_state: dict[str, Any] | None = None
        best_dev_logits: np.ndarray | None = None  # the bundle's dev scores need no second pass
        history: list[dict[str, Any]] = []
        bad_evals = 0
        if resume:
            ckpt = self.load_checkpoint()
            if ckpt is None:
                raise TrainingError(f"--resume: no checkpoint in {self.out / CHECKPOINT_DIR}")
            self.model.load_state_dict(ckpt["model"], strict=False)
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            step, epoch, batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
            best, best_state, history, bad_evals = ckpt["best"], ckpt["best_state"], ckpt["history"], ckpt["bad_evals"]
            best_dev_logits = ckpt.get("best_dev_logits")
            torch.set_rng_state(ckpt["torch_rng"])

        bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
        t_start = time.perf_counter()
        running = None
        stop = step >= total_steps
        while not stop:
            batches = train_batches(lengths, cfg.batch_size, cfg.seed + epoch)
            self.model.train()
            optimizer.zero_grad(set_to_none=True)
            for bi in range(batch_in_epoch, len(batches)):
                idx = batches[bi]
                target = torch.from_numpy(train_y[idx]).to(self.device)
                loss = classifier_loss(self.model, self.encoder, train_ids, idx, target, self.device, prefix,
                                       self.amp_dtype) / cfg.grad_accum
                scaler.scale(loss).backward()
                running = loss.item() * cfg.grad_accum if running is None else 0.9 * running + 0.1 * loss.item() * cfg.grad_accum
                if (bi + 1) % cfg.grad_accum and bi + 1 < len(batches):
                    continue
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{running:.4f}", dev_f1=f"{best['macro_f1']:.3f}" if best["macro_f1"] >= 0 else "-")
                at_end = step >= total_steps
                if step % eval_every == 0 or at_end or bi + 1 == len(batches):
                    dev_logits = (self.predict_logits(dev_ids) if dev_prefix is None else
                                  prefix_logits(self.model, self.encoder, dev_ids.ids, dev_prefix,
                                                cfg.eval_batch_size, self.eval_amp_dtype))
                    dev_probs = calibrated_probs(dev_logits, Calibration())  # identity: plain sigmoid
                    f1_half, _ = macro_f1(dev_y.astype(np.int64), decisions(dev_probs, [0.5] * len(LABELS)))
                    # Model selection on macro-F1 at per-label tuned thresholds (as the bundle will use them),
                    # not at 0.5: rare labels (natural priors) cross 0.5 late, and F1@0.5 would stop too early.
                    f1 = tuned_macro_f1(dev_probs, dev_y.astype(np.int64))
                    self.model.train()
                    record = {"step": step, "epoch": epoch, "loss": round(running, 5), "dev_macro_f1": round(f1, 4),
                              "dev_macro_f1_at_0.5": round(f1_half, 4) if f1_half == f1_half else None,
                              "elapsed_s": round(time.perf_counter() - t_start, 1)}
                    history.append(record)
                    if f1 > best["macro_f1"]:
                        best = {"macro_f1": f1, "step": step, "epoch": epoch}
                        best_state = self.trainable_state()
                        best_dev_logits = dev_logits
                        bad_evals = 0
                    else:
                        bad_evals += 1
                    bar.set_postfix(loss=f"{running:.4f}", dev_f1=f"{f1:.3f}", best=f"{best['macro_f1']:.3f}")
                    next_epoch = bi + 1 == len(batches)
                    self.save_checkpoint({
                        "model": self.trainable_state(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "step": step,
                        "epoch": epoch + 1 if next_epoch else epoch,
                        "batch_in_epoch": 0 if next_epoch else bi + 1,
                        "best": best, "best_state": best_state, "best_dev_logits": best_dev_logits,
                        "history": history, "bad_evals": bad_evals,
                        "torch_rng": torch.get_rng_state(),
                    })
                    if bad_evals >= cfg.patience:
                        bar.write(f"early stop: dev macro-F1 has not improved for {bad_evals} evaluations")
                        stop = True
                if at_end:
                    stop = True
                if stop:
                    break
            epoch += 1
            batch_in_epoch = 0
        bar.close()
        if best_state is not None:
            self.model.load_state_dict(best_state, strict=False)
        return {"steps": step, "best": best, "history": history, "dev_logits": best_dev_logits}


def read_splits(cfg: TrainConfig) -> tuple[list[Example], list[Example], list[Example], str]:
    """The config's training, dev and calibration examples (calibration is dev unless a file is given), and the
    SHA-256 of their files, taken as they are read: a corpus changed later in the run is not what the bundle records."""
    data_hash = sha256_files([Path(f) for f in dict.fromkeys(cfg.train_files + cfg.dev_files + cfg.calibration_files)])
    train_ex = read_many(cfg.train_files, cfg.train_langs)
    dev_ex = read_many(cfg.dev_files, cfg.train_langs)
    calib_ex = dev_ex if cfg.calibration_files == cfg.dev_files else read_many(cfg.calibration_files, cfg.train_langs)
    if not train_ex:
        raise TrainingError(f"no training examples in {cfg.train_files} for languages {cfg.train_langs}")
    if not dev_ex or not calib_ex:
        raise TrainingError(f"no dev or calibration examples in {cfg.dev_files + cfg.calibration_files} for "
                            f"languages {cfg.train_langs}")
    return train_ex, dev_ex, calib_ex, data_hash


def prepare_out(out: Path, force: bool, resume: bool = False) -> Path:
    """Create the bundle directory; an existing bundle is replaced only with `force`."""
    from sitrep.models.bundle import MANIFEST

    out = Path(out)
    if (out / MANIFEST).exists() and not resume:
        if not force:
            raise TrainingError(f"{out} already holds a bundle; pass --force to overwrite it")
        shutil.rmtree(out)
    if resume and not (out / CHECKPOINT_DIR / "state.pt").exists():
        raise TrainingError(f"--resume: {out / CHECKPOINT_DIR / 'state.pt'} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    return out


def train(cfg: TrainConfig, out: Path, resume: bool = False, force: bool = False, progress: bool = True) -> Path:
    """Train and write a bundle at `out`. Returns the bundle path."""
    out = prepare_out(out, force, resume)
    t0 = time.perf_counter()
    train_ex, dev_ex, calib_ex, data_hash = read_splits(cfg)
    _seed_everything(cfg.seed)
    trainer = Trainer(cfg, out)
    ids, y = trainer.encode(train_ex)
    t_prefix = time.perf_counter()
    prefix = trainer.frozen_prefix(ids.ids, progress)
    extra: dict[str, Any] = {}
    if prefix is not None:
        extra["frozen_prefix"] = {"layers": prefix.layers, "mb": round(prefix.nbytes / 2**20, 1),
                                  "time_s": round(time.perf_counter() - t_prefix, 1)}
    if cfg.contrastive_steps > 0 and not resume:  # a resumed run's checkpoint already holds the stage's weights
        from sitrep.training.contrastive import contrastive_stage

        extra["contrastive"] = contrastive_stage(
            trainer.model, trainer.encoder, ids.ids, y.astype(bool), steps=cfg.contrastive_steps,
            batch_size=cfg.contrastive_batch_size, lr=cfg.contrastive_lr, seed=cfg.seed, device=trainer.device,
            length_buckets=cfg.contrastive_length_buckets, progress=progress, prefix=prefix,
            amp_dtype=trainer.amp_dtype,
        )
    result = trainer.fit(train_ex, dev_ex, resume=resume, progress=progress, prefix=prefix, encoded=(ids, y))
    return finish_bundle(trainer, cfg, out, train_ex, dev_ex, calib_ex, data_hash, result, t0, extra)


def _rows_in(subset: list[Example], pool: list[Example]) -> np.ndarray | None:
    """Positions of `subset`'s examples in `pool` (matched on id and text), or None if one is missing.

    The calibration file is usually one of the dev files (article dev inside dev), so its logits are
    already among the dev logits training computed.
    """
    where = {(e.id, e.text): i for i, e in enumerate(pool)}
    rows = [where.get((e.id, e.text)) for e in subset]
    return None if any(r is None for r in rows) else np.asarray(rows, dtype=np.int64)


def finish_bundle(
    trainer: Trainer, cfg: TrainConfig, out: Path, train_ex: list[Example], dev_ex: list[Example],
    calib_ex: list[Example], data_hash: str, result: dict[str, Any], t0: float, extra: dict[str, Any],
) -> Path:
    """Calibrate the trained model, score every split, and write the bundle (training and `sitrep soup`)."""
    dev_logits = result.get("dev_logits")  # the selected checkpoint's, from training's own evaluation
    calib_ids, calib_y = trainer.encode(calib_ex)
    rows = _rows_in(calib_ex, dev_ex) if dev_logits is not None else None
    calib_logits = dev_logits[rows] if rows is not None else trainer.predict_logits(calib_ids)
    calibration, thresholds = calibrate(calib_logits, calib_y.astype(np.int64), cfg.threshold_rule)
    cut = [thresholds[k] for k in LABELS]
    scores = {"calibration": score_examples(calibrated_probs(calib_logits, calibration), calib_ex, cut)}
    if calib_ex is not dev_ex:
        if dev_logits is None:
            dev_logits = trainer.predict_logits(trainer.encode(dev_ex)[0])
        scores["dev"] = score_examples(calibrated_probs(dev_logits, calibration), dev_ex, cut)
    else:
        scores["dev"] = scores.pop("calibration")
    for split, path in cfg.eval_files.items():
        if Path(path).exists():
            ex = read_examples(path)
            ids, _ = trainer.encode(ex)
            scores[split] = score_examples(calibrated_probs(trainer.predict_logits(ids), calibration), ex, cut)
    elapsed = time.perf_counter() - t0

    trainer.model.save_pretrained(out / HF_DIR, safe_serialization=True)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    reports = out / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in result["history"]))
    now = dt.datetime.now(dt.UTC)
    manifest = Manifest(
        name=cfg.name,
        version=cfg.version or now.strftime("%Y.%m.%d-%H%M%S"),
        base_model=cfg.base_model if cfg.base_model == trainer.base else f"{cfg.base_model} ({trainer.base})",
        max_length=cfg.max_length,
        thresholds=thresholds,
        calibration=calibration,
        training={
            "config": cfg.to_json(),
            "data_hash": data_hash,
            "train_langs": sorted({e.lang for e in train_ex}),
            "n_train": len(train_ex),
            "n_dev": len(dev_ex),
            "n_calibration": len(calib_ex),
            "pooling": cfg.pooling,
            **extra,
            "steps": result["steps"],
            "best": result["best"],
            "device": str(trainer.device),
            "threads": trainer.torch.get_num_threads(),
            "mixed_precision": str(trainer.amp_dtype) if trainer.amp_dtype else "none",
            "time_s": round(elapsed, 1),
        },
        scores=scores,
    )
    write_bundle_manifest(out, manifest)
    return out
