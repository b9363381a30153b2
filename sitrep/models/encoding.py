"""Tokenization for every path (training, export parity, runtime): one tokenizer.json, one padding rule.

Two readers of the same vocabulary: the Hugging Face `tokenizers` Unigram model from tokenizer.json
(training, and bundles exported before the SentencePiece file existed), and SentencePiece with the
model export derives from that tokenizer.json (sitrep/training/sentencepiece_model.py), which the
runtime prefers where a bundle has it: the same ids (export checks them on its parity sentences) in a
fraction of the memory tokenizer.json's reader takes for the 250k-piece vocabulary (sitrep/models/README.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Encoded:
    ids: list[np.ndarray]  # one int64 array per text, specials included, truncated to max_length
    truncated: list[bool]

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))


class TextEncoder:
    """The bundle's tokenizer with its max length and the model's pad id.

    `spm_file`: a SentencePiece model of the same vocabulary; when given, tokenizer.json is not loaded.
    """

    def __init__(self, tokenizer_file: str | Path, max_length: int, spm_file: str | Path | None = None) -> None:
        self.max_length = max_length
        self.spm: Any = None
        if spm_file is not None:
            import sentencepiece

            self.spm = sentencepiece.SentencePieceProcessor(model_file=str(spm_file))
            self.pad_id, self.bos_id, self.eos_id = self.spm.pad_id(), self.spm.bos_id(), self.spm.eos_id()
            return
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        pad = self.tokenizer.token_to_id("<pad>")
        self.pad_id = 1 if pad is None else pad
        eos = self.tokenizer.token_to_id("</s>")
        self.eos_id = 2 if eos is None else eos

    @classmethod
    def for_bundle(cls, bundle: Any) -> TextEncoder:
        """The encoder a bundle's runtimes use: its SentencePiece model where export wrote one."""
        return cls(bundle.tokenizer_file, bundle.max_length, bundle.spm_file)

    def encode(self, texts: list[str], contexts: list[str] | None = None) -> Encoded:
        """Token ids of `texts`; with `contexts` (one per text, "" for none), each text as the first segment and
        its context as the second, XLM-R's pair layout ``<s> text </s></s> context </s>``. The text keeps its
        place and length (cut to max_length as alone); the context fills what room is left and is cut first."""
        if self.spm is not None:
            # Same layout as tokenizer.json's template: <s> pieces </s>, the pieces cut to fit max_length.
            room = self.max_length - 2
            pieces = self.spm.encode(texts) if texts else []
            encoded = Encoded(
                ids=[np.asarray([self.bos_id, *p[:room], self.eos_id], dtype=np.int64) for p in pieces],
                truncated=[len(p) > room for p in pieces],
            )
        else:
            encodings = self.tokenizer.encode_batch(texts)
            encoded = Encoded(
                ids=[np.asarray(e.ids, dtype=np.int64) for e in encodings],
                truncated=[bool(e.overflowing) for e in encodings],
            )
        if contexts is None:
            return encoded
        if len(contexts) != len(texts):
            raise ValueError(f"{len(contexts)} contexts for {len(texts)} texts")
        which = [i for i, c in enumerate(contexts) if c and self.max_length - len(encoded.ids[i]) >= 3]
        for i, ctx in zip(which, self._pieces([contexts[i] for i in which]), strict=True):
            room = self.max_length - len(encoded.ids[i]) - 2
            encoded.ids[i] = np.concatenate([encoded.ids[i], np.asarray([self.eos_id, *ctx[:room], self.eos_id], dtype=np.int64)])
        return encoded

    def _pieces(self, texts: list[str]) -> list[list[int]]:
        """Token ids without the special tokens."""
        if not texts:
            return []
        if self.spm is not None:
            return self.spm.encode(texts)
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def pad(self, ids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad a batch to its longest member: (input_ids, attention_mask), both int64 [B, L]."""
        width = max((len(x) for x in ids), default=1)
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return input_ids, mask


# What one model call costs beyond its tokens, in tokens: a batch of B texts padded to L costs about
# CALL_OVERHEAD_TOKENS + B * L token-times on CPU. Measured with `sitrep bench shapes BUNDLE` (ONNX
# Runtime int8 and fp32, 2 threads: a fixed 2-3 ms a call, one token about 0.3 ms; sitrep/models/README.md).
CALL_OVERHEAD_TOKENS = 8


def length_batches(
    lengths: np.ndarray, batch_size: int, max_tokens: int | None = None, overhead_tokens: int | None = None
) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (so little padding is wasted).

    Batches hold at most `batch_size` texts and, when `max_tokens` is given, at most that many
    padded tokens. With `overhead_tokens` (CPU runtimes), each such batch is further cut where that
    lowers its padded cost, one call costing `overhead_tokens` + texts × longest length
    (`split_by_cost`): 31 short texts and one long one become two calls instead of 32 texts padded
    to the long one. Callers scatter results back with the returned indices, so order is preserved.
    """
    order = np.argsort(lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < batch_size:
            if max_tokens is not None and lengths[order[end]] * (end - start + 1) > max_tokens:
                break
            end += 1
        chunk = order[start:end]
        if overhead_tokens is None or len(chunk) == 1:
            batches.append(chunk)
        else:
            batches.extend(chunk[a:b] for a, b in split_by_cost(lengths[chunk], overhead_tokens))
        start = end
    return batches


def split_by_cost(sorted_lengths: np.ndarray, overhead_tokens: int) -> list[tuple[int, int]]:
    """The cheapest cut of ascending lengths into consecutive calls: [(start, end), ...].

    A call of texts i..j-1 costs `overhead_tokens` + (j - i) × lengths[j - 1] (padded to its longest);
    dynamic programming over the cut points finds the minimum total (O(n²) for one batch of n).
    """
    n = len(sorted_lengths)
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):
        starts = np.arange(j)
        costs = best[:j] + overhead_tokens + (j - starts) * float(sorted_lengths[j - 1])
        k = int(np.argmin(costs))
        best[j], cut[j] = costs[k], k
    spans: list[tuple[int, int]] = []
    j = n
    while j > 0:
        spans.append((int(cut[j]), j))
        j = int(cut[j])
    return spans[::-1]


def padded_batches(
    encoder: TextEncoder,
    encoded: Encoded,
    batch_size: int,
    max_tokens: int | None = None,
    overhead_tokens: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(indices, input_ids, attention_mask) for each length-bucketed batch of `encoded`, padded."""
    for idx in length_batches(encoded.lengths, batch_size, max_tokens, overhead_tokens):
        input_ids, mask = encoder.pad([encoded.ids[i] for i in idx])
        yield idx, input_ids, mask
