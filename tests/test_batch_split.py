"""Padding-aware batches: a CPU call costs a fixed overhead plus its padded tokens, so a batch of
mixed lengths is cut where the padding saved pays for the extra call (models.encoding)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from sitrep.models.encoding import CALL_OVERHEAD_TOKENS, length_batches, split_by_cost
from sitrep.models.runtime import load


def cost(lengths: np.ndarray, spans: list[tuple[int, int]], overhead: int) -> float:
    return sum(overhead + (b - a) * float(lengths[b - 1]) for a, b in spans)


def test_one_long_text_gets_its_own_call() -> None:
    lengths = np.array([10] * 31 + [111])
    assert split_by_cost(lengths, 8) == [(0, 31), (31, 32)]
    assert split_by_cost(np.array([30] * 32), 8) == [(0, 32)]  # equal lengths: one call
    assert split_by_cost(np.array([10, 11, 12]), 1000) == [(0, 3)]  # calls dearer than any padding


@pytest.mark.parametrize("seed", range(20))
def test_the_cut_is_the_cheapest_of_all_cuts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 10))
    lengths = np.sort(rng.integers(3, 128, size=n))
    overhead = int(rng.integers(0, 40))
    spans = split_by_cost(lengths, overhead)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(a < b for a, b in spans) and all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    brute = min(
        cost(lengths, list(zip((0, *cuts), (*cuts, n), strict=True)), overhead)
        for r in range(n)
        for cuts in itertools.combinations(range(1, n), r)
    )
    assert cost(lengths, spans, overhead) == pytest.approx(brute)


def test_length_batches_keep_their_limits_and_every_index_once() -> None:
    rng = np.random.default_rng(3)
    lengths = rng.integers(3, 128, size=500)
    plain = length_batches(lengths, 32, max_tokens=2048)
    split = length_batches(lengths, 32, max_tokens=2048, overhead_tokens=CALL_OVERHEAD_TOKENS)
    for batches in (plain, split):
        assert sorted(np.concatenate(batches).tolist()) == list(range(500))
        assert all(len(b) <= 32 and len(b) * lengths[b].max() <= 2048 for b in batches)
    padded = [sum(len(b) * int(lengths[b].max()) + CALL_OVERHEAD_TOKENS for b in bs) for bs in (plain, split)]
    assert padded[1] <= padded[0]


def test_a_request_of_mixed_lengths_runs_as_several_calls_with_the_same_results(tiny_bundle: Path) -> None:
    texts = ["A short line."] * 15 + [" ".join(["The ministry said the strike hit."] * 8)]
    seen: dict[bool, list[tuple[int, ...]]] = {}
    probs = {}
    for split in (True, False):
        clf = load(tiny_bundle, "onnx", split_batches=split)
        inner = clf.backend
        shapes: list[tuple[int, ...]] = []

        def record(ids: np.ndarray, mask: np.ndarray, inner=inner, shapes=shapes) -> np.ndarray:
            shapes.append(ids.shape)
            return inner(ids, mask)

        record.on_gpu = False  # type: ignore[attr-defined]
        clf.backend = record  # type: ignore[assignment]
        probs[split] = clf.classify(texts, batch_size=32).probs
        seen[split] = shapes
    assert len(seen[False]) == 1 and seen[False][0][0] == 16
    assert len(seen[True]) == 2 and sorted(s[0] for s in seen[True]) == [1, 15]
    assert sum(b * w for b, w in seen[True]) < seen[False][0][0] * seen[False][0][1]
    np.testing.assert_allclose(probs[True], probs[False], atol=1e-5)
