"""The frozen bottom of the encoder, run once per training sentence instead of once per step.

With `freeze_layers = N` the embedding block and the encoder's first N layers never change, so what they
compute for a sentence is fixed. `FrozenPrefix` runs them once over the training sentences (eval mode: no
dropout in the frozen part; no gradients) and keeps each sentence's hidden states after layer N; training
steps then run only the trainable top of the encoder, the pooling and the head on those states
(`FrozenPrefix.top_only`). Both stages use it: the contrastive stage draws 6,400 sentences (200 steps × 32)
and the classifier stage reads every sentence once per epoch, so with two or three epochs the frozen layers
run once per sentence instead of three or four times. The dev evaluation after every epoch starts from a
second cache, over the dev sentences (`prefix_logits`), so it too runs only the top layers. The cache is fp32
hidden states, tokens × hidden size (648 MB for the default's 10,364 sentences), held in CPU memory.
Turned on by the config's `cache_frozen` (sitrep/training/config.py); its effect on time and article dev is
measured in sitrep/models/README.md ("Recipes", "Training time").

What changes against running the frozen layers in every step: dropout no longer acts inside them (their
output is the eval-mode one); the trainable layers above keep theirs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sitrep.models.encoding import TextEncoder, length_batches


def _fixed(states: Any) -> Any:
    """A module standing in for the embedding block: it returns `states`, whatever it is given."""
    import torch

    class Fixed(torch.nn.Module):
        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return states

    return Fixed()


class FrozenPrefix:
    """Hidden states after the frozen bottom (embedding block + first `layers` layers) of each sentence."""

    def __init__(self, model: Any, layers: int, encoder: TextEncoder, ids: list[np.ndarray], device: Any,
                 batch_size: int = 64, progress: bool = True) -> None:
        import torch

        self.layers, self.encoder, self.device = layers, encoder, device
        self.body = getattr(model, model.base_model_prefix)
        if not 0 < layers < len(self.body.encoder.layer):
            raise ValueError(f"frozen layers {layers}: the encoder has {len(self.body.encoder.layer)} layers")
        bottom = [self.body.embeddings, *self.body.encoder.layer[:layers]]
        if any(p.requires_grad for m in bottom for p in m.parameters()):
            raise ValueError("FrozenPrefix needs the embedding block and the first layers frozen")
        self.lengths = np.asarray([len(x) for x in ids], dtype=np.int64)
        self.states: list[Any] = [None] * len(ids)
        was_training = model.training
        model.eval()
        top = self.body.encoder.layer
        self.body.encoder.layer = torch.nn.ModuleList(top[:layers])
        try:
            batches = length_batches(self.lengths, batch_size)
            with torch.no_grad():
                for idx in tqdm(batches, desc="frozen layers", unit="batch", disable=not progress,
                                dynamic_ncols=True):
                    input_ids, mask = encoder.pad([ids[i] for i in idx])
                    hidden = self.body(input_ids=torch.from_numpy(input_ids).to(device),
                                       attention_mask=torch.from_numpy(mask).to(device)).last_hidden_state
                    hidden = hidden.float().cpu()
                    for row, i in enumerate(idx):
                        self.states[i] = hidden[row, : self.lengths[i]].clone()
        finally:
            self.body.encoder.layer = top
            model.train(was_training)

    @property
    def nbytes(self) -> int:
        return int(sum(s.numel() * s.element_size() for s in self.states))

    def batch(self, idx: np.ndarray, ids: list[np.ndarray]) -> tuple[Any, Any, Any]:
        """(input_ids, attention_mask, hidden states after the frozen layers) for rows `idx`, padded alike."""
        import torch

        input_ids, mask = self.encoder.pad([ids[i] for i in idx])
        hidden = torch.zeros((len(idx), input_ids.shape[1], self.states[idx[0]].shape[-1]), dtype=torch.float32)
        for row, i in enumerate(idx):
            hidden[row, : self.lengths[i]] = self.states[i]
        return (torch.from_numpy(input_ids).to(self.device), torch.from_numpy(mask).to(self.device),
                hidden.to(self.device))

    @contextmanager
    def top_only(self, hidden: Any) -> Iterator[None]:
        """Inside, the model's forward starts from `hidden` (the frozen bottom's output) at layer N.

        The model's own forward still builds the attention mask, runs the trainable layers, pools and
        applies the head, so a cached step computes what an uncached eval-mode bottom would.
        """
        import torch

        embeddings, layers = self.body.embeddings, self.body.encoder.layer
        self.body.embeddings = _fixed(hidden)
        self.body.encoder.layer = torch.nn.ModuleList(layers[self.layers :])
        try:
            yield
        finally:
            self.body.embeddings = embeddings
            self.body.encoder.layer = layers


def training_attention(module: Any, device: Any) -> Any:
    """The attention kernel of a training step: on a CPU, PyTorch's math kernel while `module` trains.

    With dropout on attention (the base encoder's 0.1) PyTorch picks that kernel by itself, so nothing changes
    for such a recipe. Without (`--dropout 0`) it would pick its CPU flash kernel, whose backward took 30% of the
    dropout-free bf16 step and made it slower than the step with dropout (sitrep/bench/results/
    bench-train-step-profile-dropout0-flash.md). Evaluation (eval mode) and other devices keep PyTorch's choice."""
    if device.type != "cpu" or not module.training:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def forward_batch(module: Any, encoder: TextEncoder, ids: list[np.ndarray], idx: np.ndarray, device: Any,
                  prefix: FrozenPrefix | None = None) -> tuple[Any, Any]:
    """(`module`'s output, attention mask) for rows `idx` of `ids`: through the whole model, or with `prefix`
    from its cached frozen bottom up. `module` is the classifier or its encoder body; both training stages
    call this, so the cached and uncached steps differ only here."""
    import torch

    if prefix is None:
        input_ids, mask = encoder.pad([ids[i] for i in idx])
        attn = torch.from_numpy(mask).to(device)
        with training_attention(module, device):
            return module(input_ids=torch.from_numpy(input_ids).to(device), attention_mask=attn), attn
    input_t, attn, bottom = prefix.batch(idx, ids)
    with prefix.top_only(bottom), training_attention(module, device):
        return module(input_ids=input_t, attention_mask=attn), attn


def prefix_logits(model: Any, encoder: TextEncoder, ids: list[np.ndarray], prefix: FrozenPrefix,
                  batch_size: int = 64, amp_dtype: Any = None) -> np.ndarray:
    """Eval-mode logits [n, labels] of `model` for `ids`, from `prefix` (the frozen bottom's output for the same
    `ids`) up: what the whole model computes in eval mode, up to float rounding, at the cost of its top layers.
    Length-bucketed batches of at most `batch_size`, scattered back into `ids`' order."""
    import torch

    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), torch.autocast(prefix.device.type, dtype=amp_dtype,
                                                    enabled=amp_dtype is not None):
            for idx in length_batches(prefix.lengths, batch_size):
                logits = forward_batch(model, encoder, ids, idx, prefix.device, prefix)[0].logits
                out[idx] = logits.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out
