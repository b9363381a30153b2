"""The micro-batcher on its own (no HTTP): merging, splitting, thresholds, failures, bounds, draining."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from sitrep.models.calibration import labels_above
from sitrep.models.runtime import load
from sitrep.serving.batcher import BatchConfig, Batcher, Overloaded, TooManyTokens
from sitrep.serving.lifecycle import LoadedModel
from sitrep.serving.prometheus import Metrics

TEXTS = [
    "The group said it hit the base.",
    "قالت الوزارة إن صاروخين سقطا",
    "دو نفر زخمی شدند.",
    "Nothing happened today.",
    "The army said it struck back in response.",
]


@pytest.fixture(scope="module")
def model(tiny_bundle: Path) -> LoadedModel:
    clf = load(tiny_bundle, "onnx", threads=1)
    return LoadedModel(clf, clf.bundle.name, clf.bundle.version, "onnx", tiny_bundle, 0.0)


def run(coro):
    return asyncio.run(coro)


def test_merged_requests_get_their_own_slices(model: LoadedModel) -> None:
    metrics = Metrics()
    reference = model.classifier.classify(TEXTS)
    cut = np.array([0.0, 1.0, 0.0, 1.0], dtype=np.float32)

    async def scenario():
        b = Batcher(BatchConfig(max_wait_ms=50), metrics)
        b.start()
        jobs = [b.submit([t], model, cut if i % 2 else None) for i, t in enumerate(TEXTS)]
        jobs.append(b.submit(TEXTS, model))
        out = await asyncio.gather(*jobs)
        await b.close()
        return out

    results = run(scenario())
    for i, r in enumerate(results[:-1]):
        np.testing.assert_allclose(r.probs[0], reference.probs[i], atol=1e-5)
        expected = labels_above(reference.probs[i : i + 1], cut)[0] if i % 2 else reference.labels[i]
        assert r.labels == [expected]
    np.testing.assert_allclose(results[-1].probs, reference.probs, atol=1e-5)
    assert metrics.registry.get_sample_value("sitrep_batch_size_requests_sum") == 6
    assert metrics.registry.get_sample_value("sitrep_batch_size_requests_count") <= 3


def test_runtime_failure_reaches_every_job_and_the_batcher_goes_on(tiny_bundle: Path) -> None:
    clf = load(tiny_bundle, "onnx", threads=1)
    broken = LoadedModel(clf, "tiny", "x", "onnx", tiny_bundle, 0.0)
    good_backend = clf.backend

    def boom(input_ids, attention_mask):
        raise RuntimeError("the runtime failed")

    async def scenario():
        b = Batcher(BatchConfig(max_wait_ms=20), Metrics())
        b.start()
        clf.backend = boom
        failed = await asyncio.gather(*(b.submit([t], broken) for t in TEXTS), return_exceptions=True)
        clf.backend = good_backend
        ok = await b.submit(TEXTS[:2], broken)
        alive = b.alive
        await b.close()
        return failed, ok, alive

    failed, ok, alive = run(scenario())
    assert all(isinstance(f, RuntimeError) and "runtime failed" in str(f) for f in failed)
    assert ok.probs.shape == (2, 4) and alive


def test_queue_bound_and_oversized_request(model: LoadedModel) -> None:
    async def scenario():
        b = Batcher(BatchConfig(queue_limit=4, max_wait_ms=200), Metrics())
        b.start()
        big = asyncio.create_task(b.submit(TEXTS * 2, model))  # 10 > limit, admitted into an empty queue
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as refused:
            await b.submit(TEXTS[:1], model)
        result = await big
        after = await b.submit(TEXTS[:1], model)  # room again
        await b.close()
        return refused.value, result, after

    refused, result, after = run(scenario())
    assert refused.reason == "queue_full" and "limit 4" in str(refused)
    assert len(result.labels) == 10 and len(after.labels) == 1


def test_refuse_mode_only_fails_the_long_request(model: LoadedModel) -> None:
    long_text = "a b c d e f g h " * 20

    async def scenario():
        b = Batcher(BatchConfig(max_wait_ms=50), Metrics())
        b.start()
        out = await asyncio.gather(
            b.submit(["short", long_text], model, refuse_truncated=True),
            b.submit([long_text], model),
            return_exceptions=True,
        )
        await b.close()
        return out

    refused, truncated = run(scenario())
    assert isinstance(refused, TooManyTokens) and refused.position == 1
    assert truncated.truncated == [True]


def test_close_drains_then_refuses(model: LoadedModel) -> None:
    async def scenario():
        b = Batcher(BatchConfig(max_wait_ms=1000, max_batch_size=10_000), Metrics())
        b.start()
        pending = [asyncio.create_task(b.submit([t], model)) for t in TEXTS * 4]
        await asyncio.sleep(0.05)  # all queued, the collector still waiting for company
        await b.close(timeout=30)
        with pytest.raises(Overloaded):
            await b.submit(["late"], model)
        return await asyncio.gather(*pending)

    done = run(scenario())
    assert len(done) == 20 and all(len(r.labels) == 1 for r in done)
