"""Recipe building blocks: the contrastive first stage, model soups, the int8 sensitivity ranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sitrep.models.bundle import load_bundle
from tests.conftest import tiny_config


def test_jaccard_targets_and_stratified_batches() -> None:
    from sitrep.training.contrastive import jaccard_targets, stratified_batches

    y = np.array([[1, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=bool)
    t = jaccard_targets(y)
    assert t[0, 1] == pytest.approx(0.5) and t[2, 3] == 1.0 and t[0, 2] == 0.0 and t[0, 4] == 0.0
    assert np.allclose(t, t.T) and np.allclose(np.diag(t), 1.0)
    batches = stratified_batches(y, batch_size=4, steps=10, seed=1)
    assert len(batches) == 10
    for b in batches:
        assert len(set(b.tolist())) == len(b) == 4
        assert y[b].any(axis=1).sum() == 2  # half labeled, half background
    assert all(len(b) == 3 for b in stratified_batches(y[:3], batch_size=3, steps=2, seed=1))


def test_pair_loss_is_zero_only_when_cosines_match_targets() -> None:
    import torch

    from sitrep.training.contrastive import pair_loss

    e = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    same = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert float(pair_loss(e, same)) == pytest.approx(0.0, abs=1e-7)
    assert float(pair_loss(e, 1 - same)) > 0.5


def test_contrastive_stage_runs_before_the_head_and_is_recorded(tiny_base: Path, tiny_data: dict,
                                                                tmp_path: Path) -> None:
    from sitrep.training.train import train

    cfg = tiny_config(tiny_base, tiny_data, pooling="mean", max_steps=2, contrastive_steps=30,
                      contrastive_batch_size=8, contrastive_lr=3e-3)
    out = train(cfg, tmp_path / "c", progress=False)
    stage = load_bundle(out).manifest.training["contrastive"]
    assert stage["steps"] == 30 and stage["batch_size"] == 8
    assert stage["loss_last_20"] < stage["loss_first_20"]  # the pairs are being learned
    plain = train(tiny_config(tiny_base, tiny_data, pooling="mean", max_steps=2), tmp_path / "p", progress=False)
    assert "contrastive" not in load_bundle(plain).manifest.training


def test_average_is_elementwise_mean() -> None:
    import torch

    from sitrep.training.soup import average

    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor([5])}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor([7])}
    out = average([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and torch.equal(out["n"], torch.tensor([5]))


def test_soup_of_seeds_is_a_working_bundle(tiny_base: Path, tiny_data: dict, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from sitrep.models.runtime import load
    from sitrep.training.soup import soup
    from sitrep.training.train import TrainingError, train

    seeds = [train(tiny_config(tiny_base, tiny_data, pooling="mean", max_steps=3, seed=s), tmp_path / f"s{s}",
                   progress=False) for s in (1, 2)]
    out = soup(seeds, tmp_path / "uniform", method="uniform", log=lambda *_: None, progress=False)
    manifest = load_bundle(out).manifest
    record = manifest.training["soup"]
    assert record["method"] == "uniform" and len(record["kept"]) == 2
    assert {"dev", "test"} <= set(manifest.scores)
    w = [load_file(str(Path(p) / "hf" / "model.safetensors")) for p in seeds]
    mixed = load_file(str(out / "hf" / "model.safetensors"))
    key = next(k for k in mixed if k.startswith("classifier") and k.endswith("weight"))
    assert np.allclose(mixed[key].numpy(), (w[0][key].numpy() + w[1][key].numpy()) / 2, atol=1e-6)
    assert load(out, "torch", device="cpu").classify(["The group said it hit the base."]).probs.shape == (1, 4)

    greedy = soup(seeds, tmp_path / "greedy", log=lambda *_: None, progress=False)
    trials = load_bundle(greedy).manifest.training["soup"]["trials"]
    assert len(trials) == 2 and trials[1]["kept"] == (trials[1]["dev_macro_f1"] >= trials[0]["dev_macro_f1"])

    cls = train(tiny_config(tiny_base, tiny_data, max_steps=2), tmp_path / "cls", progress=False)
    with pytest.raises(TrainingError, match="pooling"):
        soup([seeds[0], cls], tmp_path / "bad", log=lambda *_: None, progress=False)
    ctx = train(tiny_config(tiny_base, tiny_data, pooling="mean", max_steps=2, context="previous"), tmp_path / "ctx",
                progress=False)
    with pytest.raises(TrainingError, match="context"):  # read with other inputs: not the same start
        soup([seeds[0], ctx], tmp_path / "bad-ctx", log=lambda *_: None, progress=False)
    with pytest.raises(TrainingError, match="at least two"):
        soup([seeds[0]], tmp_path / "one", log=lambda *_: None, progress=False)


def test_soup_cli_errors_are_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sitrep.cli import app

    result = CliRunner().invoke(app, ["soup", str(tmp_path / "nope"), str(tmp_path / "nope2"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_fake_quant_matches_onnxruntime_dynamic_quantize_linear() -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from sitrep.training.outlier_split import _fake_quant_uint8

    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "dq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32) * 3
    x[3, 5] = 40.0  # one massive activation, the case the ranking is for
    (expected,) = sess.run(None, {"x": x})
    assert np.allclose(_fake_quant_uint8(x, axis=None), expected, atol=1e-5)


def test_quantization_error_ranks_the_matmul_with_outlier_inputs_first(tiny_base: Path, tmp_path: Path) -> None:
    """Two MatMuls compute the same function, but one reads its input with a channel scaled 1000× (a
    "massive activation", its weight row scaled down to match): under a per-tensor dynamic scale the
    ordinary channels lose their resolution, so its output error is far higher and it ranks first."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from sitrep.models.encoding import TextEncoder
    from sitrep.training.outlier_split import quantization_error
    from tests.tiny_model import MAX_LENGTH

    rng = np.random.default_rng(0)
    scale = np.ones((1, 8), dtype=np.float32)
    scale[0, 0] = 1000.0
    w2 = rng.normal(size=(8, 4)).astype(np.float32)
    w3 = w2.copy()
    w3[0] /= 1000.0  # the same function of the ordinary channels; only the input's range differs
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["xf", "ax"], ["x3"]),
        helper.make_node("MatMul", ["x3", "w"], ["h"], name="embed"),
        helper.make_node("Sin", ["h"], ["hs"]),
        helper.make_node("Mul", ["hs", "scale"], ["hx"]),
        helper.make_node("MatMul", ["hs", "w2"], ["a"], name="plain"),
        helper.make_node("MatMul", ["hx", "w3"], ["b"], name="outlier"),
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("ReduceMean", ["sum"], ["logits"], axes=[1], keepdims=0),
    ]
    inits = [numpy_helper.from_array(rng.normal(size=(1, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(scale, "scale"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(w3, "w3"),
             numpy_helper.from_array(np.array([-1], dtype=np.int64), "ax")]
    graph = helper.make_graph(
        nodes, "toy",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [None, None]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [None, None])],  # fed, unused
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 4])], inits)
    path = tmp_path / "toy.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    encoder = TextEncoder(tiny_base / "tokenizer.json", MAX_LENGTH)
    errors = quantization_error(path, ["plain", "outlier"], encoder, ["the army said", "the group said it hit"] * 4)
    assert errors["outlier"] > 10 * errors["plain"] > 0
    with pytest.raises(ValueError, match="no MatMul"):
        quantization_error(path, ["missing"], encoder, ["x"])


def test_length_buckets_keep_batches_short_and_stratified() -> None:
    from sitrep.training.contrastive import stratified_batches

    rng = np.random.default_rng(3)
    y = rng.random((400, 4)) < 0.15
    lengths = rng.integers(5, 128, size=400)
    plain = stratified_batches(y, 16, 50, seed=1)
    bucketed = stratified_batches(y, 16, 50, seed=1, lengths=lengths)
    spread = [float(np.ptp(lengths[b])) for b in bucketed]
    assert np.mean(spread) < 0.5 * np.mean([float(np.ptp(lengths[b])) for b in plain])
    for b in bucketed:
        assert len(set(b.tolist())) == 16 and y[b].any(axis=1).sum() == 8


@pytest.mark.parametrize("config", sorted((Path(__file__).parent.parent / "sitrep/training/configs").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_every_recipe_config_loads(config: Path) -> None:
    from sitrep.training.config import TrainConfig

    cfg = TrainConfig.load(config)
    assert cfg.pooling in ("cls", "mean") and all(Path(f).is_file() for f in cfg.train_files + cfg.dev_files)


def test_gate_compare_stops_once_the_gate_cannot_be_met(tiny_bundle: Path) -> None:
    from sitrep.models.corpus import label_matrix, read_examples
    from sitrep.models.runtime import load
    from sitrep.training.export import Gates, gate_compare

    bundle = load_bundle(tiny_bundle)
    examples = read_examples(bundle.manifest.training["config"]["dev_file"])[:40]
    texts, y = [e.text for e in examples], label_matrix(examples)
    ref = load(bundle, "torch", device="cpu").classify(texts).probs
    int8 = tiny_bundle / "onnx" / "model.int8.onnx"
    full, ok = gate_compare(bundle, int8, texts, ref, y, Gates(int8_min_agreement=0.0, int8_max_f1_drop=1.0), chunk=16)
    assert ok and full["scored"] == full["n"] == 40
    impossible, ok = gate_compare(bundle, int8, texts, ref, y, Gates(int8_min_agreement=1.01), chunk=16)
    assert not ok and impossible["scored"] == 16  # failed after the first chunk, the rest never scored
    # A full comparison is order-free: scored hardest-first, its figures are the whole set's.
    from sitrep.training.export import compare

    whole = compare(ref, load(bundle, "onnx-int8").classify(texts).probs, y, bundle.thresholds)
    for k in ("label_agreement", "macro_f1", "macro_f1_delta"):
        assert full[k] == pytest.approx(whole[k], abs=2e-4), k


def test_the_int8_gate_also_scores_the_data_in_its_own_order(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dynamic int8 decisions depend on a sentence's batch-mates: a candidate that agrees in export's
    hardest-first chunks but not when the data is scored in its own order, in one call, fails the gate."""
    from types import SimpleNamespace

    from sitrep.models.calibration import decisions
    from sitrep.models.corpus import label_matrix, read_examples
    from sitrep.models.runtime import load
    from sitrep.training import export as export_mod

    bundle = load_bundle(tiny_bundle)
    examples = read_examples(bundle.manifest.training["config"]["dev_file"])[:40]
    texts, y = [e.text for e in examples], label_matrix(examples)
    ref = load(bundle, "onnx-int8").classify(texts).probs
    row = {t: i for i, t in enumerate(texts)}
    flipped = 1.0 - decisions(ref[:1], bundle.thresholds)[0].astype(float)  # every decision of sentence 0 flipped

    class BatchDependent:
        def classify(self, batch: list[str], contexts: list[str] | None = None) -> SimpleNamespace:
            probs = ref[[row[t] for t in batch]].copy()
            if len(batch) == len(texts):  # only the whole set in one call changes sentence 0
                probs[batch.index(texts[0])] = flipped
            return SimpleNamespace(probs=probs)

    monkeypatch.setattr(export_mod, "candidate_classifier", lambda *_: BatchDependent())
    gates = export_mod.Gates(int8_min_agreement=0.99, int8_max_f1_drop=1.0)
    cmp, ok = export_mod.gate_compare(bundle, Path("unused.onnx"), texts, ref, y, gates, chunk=16)
    assert not ok
    assert cmp["agreement_by_batching"] == {"hardest_first": 1.0, "in_order": pytest.approx(39 / 40)}
    assert cmp["label_agreement"] == pytest.approx(39 / 40)  # the worse batching is the one reported
    lenient = export_mod.Gates(int8_min_agreement=0.95, int8_max_f1_drop=1.0)
    assert export_mod.gate_compare(bundle, Path("unused.onnx"), texts, ref, y, lenient, chunk=16)[1]


def test_the_int8_gate_holds_on_each_dev_file(tiny_bundle: Path, tmp_path: Path) -> None:
    """A candidate that passes on the union of two dev files but not on one of them fails the gate."""
    from sitrep.models.calibration import decisions
    from sitrep.models.corpus import label_matrix, read_examples, read_with_sources
    from sitrep.models.runtime import load
    from sitrep.training.export import Gates, files_below_agreement, gate_compare, passes

    bundle = load_bundle(tiny_bundle)
    examples = read_examples(bundle.manifest.training["config"]["dev_file"])[:40]
    texts, y = [e.text for e in examples], label_matrix(examples)
    int8 = tiny_bundle / "onnx" / "model.int8.onnx"
    ref = load(bundle, "onnx-int8").classify(texts).probs  # the candidate itself: it agrees everywhere
    groups = ["sentences.jsonl"] * 30 + ["articles.jsonl"] * 10
    # One decision flipped in the reference, in the small file: 97.5% agreement overall, 90% there.
    flipped = ref.copy()
    flipped[35, 0] = 1.0 if decisions(ref, bundle.thresholds)[35, 0] == 0 else 0.0
    gates = Gates(int8_min_agreement=0.95, int8_max_f1_drop=1.0)
    union, ok = gate_compare(bundle, int8, texts, flipped, y, gates)
    assert ok and union["label_agreement"] == pytest.approx(0.975) and "per_file" not in union
    per_file, ok = gate_compare(bundle, int8, texts, flipped, y, gates, groups=groups)
    assert not ok and per_file["per_file"]["articles.jsonl"]["label_agreement"] < 0.95
    assert files_below_agreement(per_file, gates) == ["articles.jsonl"]
    assert not passes({"label_agreement": 1.0, "macro_f1_delta": 0.0,
                       "per_file": {"a": {"label_agreement": 0.9, "macro_f1_delta": 0.0}}}, gates)
    # macro-F1's drop is gated on the whole set only: one file's (noisy on a small file) does not fail it
    strict = Gates(int8_min_agreement=0.95, int8_max_f1_drop=0.005)
    assert passes({"label_agreement": 1.0, "macro_f1_delta": 0.0,
                   "per_file": {"a": {"label_agreement": 0.99, "macro_f1_delta": -0.02}}}, strict)
    assert not passes({"label_agreement": 1.0, "macro_f1_delta": -0.01, "per_file": {}}, strict)
    full, ok = gate_compare(bundle, int8, texts, ref, y, gates, groups=groups)
    assert ok and set(full["per_file"]) == {"sentences.jsonl", "articles.jsonl"}
    assert full["per_file"]["articles.jsonl"]["label_agreement"] == 1.0
    # read_with_sources names each sentence's file, in read order, cut like the examples.
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"id": "1", "text": "x", "labels": []}\n{"id": "2", "text": "y", "labels": []}\n')
    b.write_text('{"id": "3", "text": "z", "labels": ["claim"]}\n')
    assert read_with_sources([a, b])[1] == [str(a), str(a), str(b)]
    assert read_with_sources([a, b], limit=2)[1] == [str(a), str(a)]


def test_hardest_first_orders_by_the_nearest_threshold() -> None:
    from sitrep.training.export import hardest_first

    ref = np.asarray([[0.9, 0.1], [0.52, 0.0], [0.2, 0.35], [0.5, 0.5]])
    assert hardest_first(ref, [0.5, 0.4]).tolist() == [3, 1, 2, 0]


def test_calibration_rows_are_found_inside_dev() -> None:
    from sitrep.models.corpus import Example
    from sitrep.training.train import _rows_in

    dev = [Example("a", "one", []), Example("b", "two", ["claim"]), Example("c", "three", [])]
    assert _rows_in([dev[2], dev[0]], dev).tolist() == [2, 0]
    assert _rows_in([Example("b", "changed", [])], dev) is None


def test_freeze_layers_keeps_the_embeddings_and_lower_layers_as_the_base(tiny_base: Path, tiny_data: dict,
                                                                        tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from sitrep.training.train import TrainingError, train

    cfg = tiny_config(tiny_base, tiny_data, pooling="mean", max_steps=3, freeze_layers=1, contrastive_steps=3,
                      contrastive_batch_size=8)
    out = train(cfg, tmp_path / "f", progress=False)
    base, tuned = load_file(str(tiny_base / "model.safetensors")), load_file(str(out / "hf" / "model.safetensors"))
    prefix = next(k for k in tuned if k.endswith("embeddings.word_embeddings.weight")).split("embeddings.")[0]
    shared = [name for name in base if prefix + name in tuned]  # the mean-pooling model has no pooler
    assert any(n.startswith("encoder.layer.1.") for n in shared) and any(n.startswith("embeddings.") for n in shared)
    for name in shared:
        frozen = name.startswith("embeddings.") or name.startswith("encoder.layer.0.")
        assert np.array_equal(base[name], tuned[prefix + name]) == frozen, name  # layer 1 trained, layer 0 not
    assert load_bundle(out).manifest.training["config"]["freeze_layers"] == 1
    with pytest.raises(TrainingError, match="freeze between 1 and 1"):
        train(tiny_config(tiny_base, tiny_data, max_steps=1, freeze_layers=2), tmp_path / "bad", progress=False)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_cached_frozen_bottom_gives_the_full_forward(tiny_base: Path, pooling: str) -> None:
    import torch

    from sitrep.models.encoding import TextEncoder
    from sitrep.models.torch_model import load_classifier
    from sitrep.training.frozen_prefix import FrozenPrefix

    model = load_classifier(tiny_base, pooling=pooling, num_labels=4, problem_type="multi_label_classification")
    body = getattr(model, model.base_model_prefix)
    for module in (body.embeddings, body.encoder.layer[0]):
        module.requires_grad_(False)
    encoder = TextEncoder(tiny_base / "tokenizer.json", 64)
    texts = ["The ministry said a drone struck the base.", "قصف", "A militia claimed the attack on Tuesday, "
             "saying it had killed two guards.", "پهپاد رهگیری شد"]
    ids = encoder.encode(texts).ids
    embeddings, layers = body.embeddings, body.encoder.layer
    prefix = FrozenPrefix(model, 1, encoder, ids, torch.device("cpu"), batch_size=2, progress=False)
    assert [len(s) for s in prefix.states] == [len(x) for x in ids] and prefix.nbytes > 0
    assert body.embeddings is embeddings and body.encoder.layer is layers  # built without changing the model
    model.eval()
    idx = np.asarray([2, 0, 3])
    input_ids, mask, bottom = prefix.batch(idx, ids)
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=mask).logits
        with prefix.top_only(bottom):
            cached = model(input_ids=input_ids, attention_mask=mask).logits
    assert body.embeddings is embeddings and len(body.encoder.layer) == 2  # restored on leaving
    assert torch.allclose(full, cached, atol=1e-5), (full - cached).abs().max()
    assert not torch.allclose(full[0], full[1])  # different sentences, different logits: the check can fail

    # The dev evaluation's path: every sentence, in its own order, from the cache up, against the whole model.
    from sitrep.models.runtime import TorchBackend, batched_logits
    from sitrep.training.frozen_prefix import prefix_logits

    model.train()  # prefix_logits evaluates in eval mode and gives the mode back
    whole = batched_logits(encoder, TorchBackend.wrap(model, torch.device("cpu")), encoder.encode(texts), 3)
    from_cache = prefix_logits(model, encoder, ids, prefix, batch_size=3)
    assert model.training and from_cache.shape == (len(texts), 4)
    np.testing.assert_allclose(from_cache, whole, atol=1e-5)
    assert not np.allclose(from_cache[0], from_cache[2])

    model.train()
    with prefix.top_only(bottom):
        model(input_ids=input_ids, attention_mask=mask).logits.sum().backward()
    assert all(p.grad is not None for p in body.encoder.layer[1].parameters())
    assert all(p.grad is None for p in body.encoder.layer[0].parameters())
    with pytest.raises(ValueError, match="frozen"):
        FrozenPrefix(load_classifier(tiny_base, pooling=pooling, num_labels=4), 1, encoder, ids,
                     torch.device("cpu"), progress=False)


def test_training_on_the_cached_frozen_bottom_keeps_it_frozen(tiny_base: Path, tiny_data: dict,
                                                             tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from sitrep.training.train import train

    cfg = tiny_config(tiny_base, tiny_data, pooling="mean", max_steps=4, freeze_layers=1, cache_frozen=True,
                      contrastive_steps=3, contrastive_batch_size=8)
    out = train(cfg, tmp_path / "c", progress=False)
    training = load_bundle(out).manifest.training
    assert training["frozen_prefix"]["layers"] == 1 and training["frozen_prefix"]["mb"] > 0
    assert training["contrastive"]["cached_frozen_layers"] == 1 and training["steps"] == 4
    base, tuned = load_file(str(tiny_base / "model.safetensors")), load_file(str(out / "hf" / "model.safetensors"))
    prefix = next(k for k in tuned if k.endswith("embeddings.word_embeddings.weight")).split("embeddings.")[0]
    for name in base:
        if prefix + name in tuned and name.startswith(("embeddings.", "encoder.layer.0.", "encoder.layer.1.")):
            frozen = not name.startswith("encoder.layer.1.")
            assert np.array_equal(base[name], tuned[prefix + name]) == frozen, name
    assert "frozen_prefix" not in load_bundle(train(tiny_config(tiny_base, tiny_data, max_steps=1, freeze_layers=1),
                                                    tmp_path / "u", progress=False)).manifest.training


def test_cache_frozen_without_frozen_layers_is_a_one_line_error(tiny_base: Path, tiny_data: dict,
                                                               tmp_path: Path) -> None:
    from sitrep.training.train import TrainingError, train

    with pytest.raises(TrainingError, match="set freeze_layers"):
        train(tiny_config(tiny_base, tiny_data, max_steps=1, cache_frozen=True), tmp_path / "bad", progress=False)


def test_mixed_precision_picks_bf16_only_where_the_device_computes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from sitrep.training import train as train_mod
    from sitrep.training.config import TrainConfig
    from sitrep.training.train import TrainingError, amp_dtype

    monkeypatch.setattr(train_mod, "has_bf16", lambda: True)
    assert amp_dtype("cpu", "auto") is torch.bfloat16 and amp_dtype("cpu", "none") is None
    monkeypatch.setattr(train_mod, "has_bf16", lambda: False)
    assert amp_dtype("cpu", "auto") is None  # no native bf16: fp32
    assert amp_dtype("cpu", "bf16") is torch.bfloat16  # asked for: given
    with pytest.raises(TrainingError, match="needs a CUDA device"):
        amp_dtype("cpu", "fp16")
    with pytest.raises(TrainingError, match="choose one of"):
        amp_dtype("cpu", "half")
    with pytest.raises(ValueError, match="mixed_precision 'half' is not one of"):
        TrainConfig.load(None, {"mixed_precision": "half"})


def test_bf16_training_on_cpu_is_recorded_and_evaluates_in_fp32(tiny_base: Path, tiny_data: dict, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from sitrep.training import train as train_mod

    wrapped: list[object] = []
    real_wrap = train_mod.TorchBackend.wrap

    def recording_wrap(model: object, device: object, amp: object = None) -> object:
        wrapped.append(amp)
        return real_wrap(model, device, amp)

    monkeypatch.setattr(train_mod.TorchBackend, "wrap", staticmethod(recording_wrap))
    autocast_dtypes: list[object] = []
    real_autocast = torch.autocast

    def recording_autocast(device_type: str, dtype: object = None, enabled: bool = True, **kw: object) -> object:
        autocast_dtypes.append(dtype if enabled else None)
        return real_autocast(device_type, dtype=dtype, enabled=enabled, **kw)

    monkeypatch.setattr(torch, "autocast", recording_autocast)
    cfg = tiny_config(tiny_base, tiny_data, pooling="mean", max_steps=3, freeze_layers=1, cache_frozen=True,
                      contrastive_steps=2, contrastive_batch_size=8, mixed_precision="bf16")
    training = load_bundle(train_mod.train(cfg, tmp_path / "b", progress=False)).manifest.training
    assert training["mixed_precision"] == "torch.bfloat16"
    assert training["contrastive"]["mixed_precision"] == "torch.bfloat16"
    assert autocast_dtypes.count(torch.bfloat16) == 2 + 3  # every contrastive and classifier step
    assert wrapped and all(amp is None for amp in wrapped)  # dev scores and calibration: fp32, as exported
