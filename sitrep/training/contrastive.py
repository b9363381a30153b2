"""A contrastive first stage (SetFit-style) before the classifier head is trained.

SetFit fine-tunes the sentence encoder on pairs first — same class pulled together, different
classes pushed apart, a cosine-similarity loss — and only then fits a head. Here, multi-label: every
step takes a batch of training sentences, embeds them as the bundle will (mean over tokens), and
regresses the cosine similarity of every pair in the batch onto the Jaccard similarity of their
label sets (1 for two background sentences, 0 for a claim and a background sentence, 0.5 for
claim vs claim + casualty). All pairs of a batch are used, so one step costs one forward and backward
pass of `batch_size` sentences.

Batches are stratified — half labeled sentences, half background — because in articles most
sentences are background and a uniform batch would mostly teach "background is like background".
The hard pairs this stage is for — a background sentence full of cue words next to a labeled one — come
from that mix. Batches can also be drawn from sentences of similar length (`length_buckets`): on
whole-article sentences that halved the time of a step (3.9 → 1.8 s on 2 CPU cores; the recipe
manifests' `training.contrastive.time_s`, sitrep/models/README.md).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sitrep.models.encoding import TextEncoder
from sitrep.training.frozen_prefix import FrozenPrefix, forward_batch


def stratified_batches(
    y: np.ndarray, batch_size: int, steps: int, seed: int, lengths: np.ndarray | None = None
) -> list[np.ndarray]:
    """`steps` batches of row indices: half rows with a label, half background (as available).

    With `lengths` (tokens per row), each batch draws from rows of similar length: a target length is
    taken from a random row, and each half is sampled from the 4×k rows of its pool nearest to it, so a
    batch is padded to little more than its own length (whole-article sentences run from a few tokens to the max length).
    """
    rng = np.random.default_rng(seed)
    labeled = np.flatnonzero(y.any(axis=1))
    background = np.flatnonzero(~y.any(axis=1))
    pools = [labeled, background] if len(labeled) and len(background) else [np.arange(len(y))]
    per_pool = [batch_size // len(pools) + (1 if i < batch_size % len(pools) else 0) for i in range(len(pools))]
    if lengths is not None:
        pools = [pool[np.argsort(lengths[pool], kind="stable")] for pool in pools]
    out = []
    for _ in range(steps):
        parts = []
        target = None if lengths is None else lengths[rng.integers(len(lengths))]
        for pool, k in zip(pools, per_pool, strict=True):
            k = min(k, len(pool))
            if target is not None and lengths is not None:
                width = min(len(pool), 4 * k)
                centre = int(np.searchsorted(lengths[pool], target))
                start = int(np.clip(centre - width // 2, 0, len(pool) - width))
                pool = pool[start : start + width]
            parts.append(rng.choice(pool, size=k, replace=False))
        out.append(np.concatenate(parts))
    return out


def jaccard_targets(y: np.ndarray) -> np.ndarray:
    """Pairwise Jaccard similarity of multi-hot rows; two empty label sets are identical (1.0)."""
    y = y.astype(np.float32)
    inter = y @ y.T
    sizes = y.sum(axis=1)
    union = sizes[:, None] + sizes[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 1.0).astype(np.float32)


def pair_loss(embeddings: Any, targets: Any) -> Any:
    """Mean squared error between pairwise cosine similarity and the targets, over distinct pairs."""
    import torch

    z = torch.nn.functional.normalize(embeddings, dim=-1)
    cos = z @ z.T
    n = cos.shape[0]
    off = ~torch.eye(n, dtype=torch.bool, device=cos.device)
    return ((cos - targets) ** 2)[off].mean()


def contrastive_stage(
    model: Any,
    encoder: TextEncoder,
    ids: list[np.ndarray],
    y: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: Any,
    length_buckets: bool = True,
    progress: bool = True,
    prefix: FrozenPrefix | None = None,
    amp_dtype: Any = None,
) -> dict[str, Any]:
    """Train `model`'s encoder body on in-batch pairs for `steps` steps. Returns the stage's record.

    With `prefix` (the frozen bottom's cached output for `ids`), each step runs only the layers above it.
    `amp_dtype`: the forward pass under autocast to it (the classifier steps' mixed precision, `train.amp_dtype`).
    """
    import torch

    from sitrep.models.torch_model import mean_pool

    body = getattr(model, model.base_model_prefix)
    params = [p for p in body.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup))
    )
    model.train()
    t0 = time.perf_counter()
    losses: list[float] = []
    bar = tqdm(total=steps, desc="contrastive", unit="step", disable=not progress, dynamic_ncols=True)
    lengths = np.asarray([len(x) for x in ids]) if length_buckets else None
    for idx in stratified_batches(y, batch_size, steps, seed, lengths):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out, attn = forward_batch(body, encoder, ids, idx, device, prefix)
            pooled = mean_pool(out.last_hidden_state, attn)
        pooled = pooled.float()
        loss = pair_loss(pooled, torch.from_numpy(jaccard_targets(y[idx])).to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    bar.close()
    return {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "length_buckets": length_buckets,
        "cached_frozen_layers": prefix.layers if prefix is not None else 0,
        "mixed_precision": str(amp_dtype) if amp_dtype is not None else "none",
        "loss_first_20": round(float(np.mean(losses[:20])), 5) if losses else None,
        "loss_last_20": round(float(np.mean(losses[-20:])), 5) if losses else None,
        "time_s": round(time.perf_counter() - t0, 1),
    }
